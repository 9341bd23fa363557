"""A run folder after a resume from an earlier step or a second run into it, and what analyze prints on stdout."""
import pytest

from kizuna.analysis.over_training import find_checkpoints


def test_over_training_leaves_out_the_steps_after_latest(tmp_path):
    """A run resumed from step_2 for 4 steps keeps the abandoned branch's step_6..step_10: over-training plotted
    them (with that branch's accuracies) as this run's, up to step 10."""
    ckpts = tmp_path / "checkpoints"
    for step in (2, 4, 6, 10):
        (ckpts / f"step_{step:07d}").mkdir(parents=True)
    (ckpts / "latest").write_text("step_0000004")
    with pytest.warns(UserWarning, match=r"step_0000006, step_0000010 come after latest \(step_0000004\)"):
        found = find_checkpoints(tmp_path)
    assert [step for step, _ in found] == [2, 4]
    (ckpts / "latest").write_text("step_0000010")  # the run went on past them: every step is its own
    assert [step for step, _ in find_checkpoints(tmp_path)] == [2, 4, 6, 10]


def test_an_interrupted_full_report_leaves_no_earlier_report_and_each_section_names_its_model(tmp_path, monkeypatch):
    """`analyze all` for model B stopped in its attention distances, into a folder of model A's report: filters.json
    and positions.json were B's, report.json and the rest still A's, and nothing said whose each file was."""
    import json

    import kizuna
    import kizuna.analysis.report as report
    from kizuna.analysis.report import full_report, load_target

    target = load_target(kizuna.create_vit("mu/4", image_size=32, num_classes=3))
    (tmp_path / "report.json").write_text(json.dumps({"model": {"source": "model A"}}))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "attention_distance_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        full_report(target, tmp_path, components=4, max_images=2, progress=False)
    assert not (tmp_path / "report.json").exists()
    for name in ("filters", "positions"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["model"] == target.source


def test_analyze_prints_its_json_alone_on_stdout(tmp_path, capsys):
    """`kizuna analyze filters M | jq` failed ("Extra data"): a "wrote OUT" line followed the JSON on stdout."""
    import json

    import kizuna
    from kizuna.apps.cli import main

    model = kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, mlp_dim=64),
                              tmp_path / "vit.safetensors")
    assert main(["analyze", "filters", str(model), "--out", str(tmp_path / "fig"), "--components", "4"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["explained_variance_total"] > 0
    assert f"wrote {tmp_path / 'fig'}" in printed.err
