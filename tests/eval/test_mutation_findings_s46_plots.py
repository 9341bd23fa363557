"""Mutation testing of stop 46's unlisted_plots (then remove_plots): an earlier results.json's plots are removed only where the
results written now do not list them; the figure an eval run just drew under the same name (the same eval again
into its --out, before its results.json is written) stays."""
import json

from kizuna.eval.suite import remove_plots, unlisted_plots


def test_a_plot_listed_before_and_now_is_kept(tmp_path):
    out = tmp_path
    (out / "results.json").write_text(json.dumps([{"details": {"plots": ["m__d__confusion.png", "old.png"]}}]))
    for name in ("m__d__confusion.png", "old.png", "mine.png"):
        (out / name).write_bytes(b"png")  # the first drawn again by this run
    remove_plots(unlisted_plots(out, {"m__d__confusion.png"}))
    assert (out / "m__d__confusion.png").is_file() and (out / "mine.png").is_file()  # a user's own file stays
    assert not (out / "old.png").exists()


def test_vit_evals_one_record_lists_its_plots_at_the_top(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"model": "vit", "plots": ["confusion.png"]}))
    (tmp_path / "confusion.png").write_bytes(b"png")
    remove_plots(unlisted_plots(tmp_path, {"clip__d__confusion.png"}))
    assert not (tmp_path / "confusion.png").exists()
