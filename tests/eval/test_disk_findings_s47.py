"""Results folders rewritten (stop 47's review of interrupted and repeated commands): an earlier results.json's
figures were removed before the new ones were drawn, so a Ctrl-C in between left that results.json naming figures
that were gone; `vit eval` left a suite's robustness scatter beside its own results."""
import json
from pathlib import Path

import pytest
from _evalhelpers import CLASSES, classification_wds

import kizuna
from kizuna.apps.cli import main
from kizuna.eval import classification, suite
from kizuna.models.checkpoint import save_model


def _earlier_results(out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([{"details": {"plots": ["m__d__confusion.png"]}}]))
    for name in ("m__d__confusion.png", "robustness_scatter.png"):
        (out / name).write_bytes(b"png")


def test_write_results_interrupted_keeps_the_earlier_results_figures(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _earlier_results(out)
    records = [{"model": "x", "dataset": "d", "task": "zeroshot", "metrics": {"acc1": 0.5},
                "details": {"plots": ["x__d__confusion.png"]}}]
    write = suite.atomic_write_texts

    def cut(files):
        if any(Path(path).name == "results.json" for path, _ in files):
            raise KeyboardInterrupt
        write(files)

    monkeypatch.setattr(suite, "markdown_report", lambda records: "# results\n")  # (the report's text aside)
    monkeypatch.setattr(suite, "atomic_write_texts", cut)
    with pytest.raises(KeyboardInterrupt):
        suite.write_results(records, out)
    assert (out / "m__d__confusion.png").is_file() and (out / "robustness_scatter.png").is_file()
    monkeypatch.setattr(suite, "atomic_write_texts", write)
    suite.write_results(records, out)
    assert not (out / "m__d__confusion.png").exists() and not (out / "robustness_scatter.png").exists()


@pytest.fixture
def vit_and_data(tmp_path):
    data = classification_wds(tmp_path / "data", n=6)
    model = kizuna.create_vit("mu/4", image_size=16, num_classes=len(CLASSES), width=16, depth=1, heads=2, mlp_dim=32)
    save_model(model, tmp_path / "vit")
    return str(tmp_path / "vit"), str(data)


def test_vit_eval_interrupted_while_drawing_keeps_the_earlier_figures_then_replaces_them(vit_and_data, tmp_path,
                                                                                          monkeypatch):
    model, data = vit_and_data
    out = tmp_path / "ev"
    _earlier_results(out)
    draw = classification.ClassificationResult.plot_confusion

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(classification.ClassificationResult, "plot_confusion", interrupted)
    argv = ["vit", "eval", model, "--data", data, "--no-progress", "--threads", "1", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(argv)
    assert (out / "m__d__confusion.png").is_file()  # the earlier results.json still names it
    assert "m__d__confusion.png" in (out / "results.json").read_text()
    monkeypatch.setattr(classification.ClassificationResult, "plot_confusion", draw)
    assert main(argv) == 0
    # (and the lock file it held the folder by, since session 52, as `kizuna eval` does)
    assert sorted(p.name for p in out.iterdir()) == [".kizuna-run.lock", "confusion.png", "results.json",
                                                       "results.md"]


def test_a_second_evaluation_into_a_folder_another_process_writes_is_refused(tmp_path, tiny_hf, capsys):
    """Two suites into one --out removed each other's figures, and one's results.json then listed a figure that
    was gone: the folder is held while a command evaluates and writes there, as a training run's is."""
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.lockf(f, fcntl.LOCK_EX); f.write('4242\\n'); "
        "f.flush(); print('held', flush=True); time.sleep(60)"), str(out / ".kizuna-run.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        data = classification_wds(tmp_path / "data", n=6)
        flags = ["eval", "zeroshot", "--model", str(tiny_hf[0]), "--dataset", str(data), "--no-progress",
                 "--workers", "0", "--out", str(out)]
        assert main(flags) == 2
        assert "another kizuna run (pid 4242) is writing there" in capsys.readouterr().err
        assert not (out / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert main(flags) == 0 and (out / "results.json").is_file()
