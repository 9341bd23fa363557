"""A second run into the same --out (found by running commands twice into one folder)."""
from __future__ import annotations

import pytest

from kizuna.models.checkpoint import move_aside
from kizuna.train.logging import set_aside_previous_log, set_aside_with_checkpoints


def _run_folder(out, tag, report=True):
    (out / "checkpoints" / "step_0000002").mkdir(parents=True)
    (out / "checkpoints" / "step_0000002" / "tag").write_text(tag)
    (out / "metrics.jsonl").write_text(f'{{"tag": "{tag}"}}\n')
    (out / "curves.png").write_text(tag)
    (out / "model").mkdir()
    (out / "model" / "tag").write_text(tag)
    if report:
        (out / "REPORT.md").write_text(tag)


def test_a_fresh_run_sets_the_earlier_runs_model_curves_and_report_aside_with_its_checkpoints(tmp_path, capsys):
    """Only checkpoints/, metrics.jsonl and tensorboard/ were set aside: a fresh run stopped before its end left the
    earlier run's model/ (what `vit eval` and `analyze` take) and curves.png beside its own log and checkpoints."""
    _run_folder(tmp_path, "one")
    set_aside_with_checkpoints(tmp_path, lambda: move_aside(tmp_path / "checkpoints", "checkpoints"))
    for name in ("checkpoints", "metrics.jsonl", "curves.png", "model", "REPORT.md"):
        assert not (tmp_path / name).exists(), name
    assert (tmp_path / "model.prev" / "tag").read_text() == "one"
    assert (tmp_path / "curves.png.prev").read_text() == "one" and (tmp_path / "REPORT.md.prev").read_text() == "one"
    assert "earlier run's final model: moved to model.prev" in capsys.readouterr().err


def test_the_prev_set_stays_one_runs_when_the_run_set_aside_wrote_no_report(tmp_path):
    """Demo 2 stopped before its report: a third demo set demo 2's checkpoints and log aside but kept demo 1's
    REPORT.md.prev and final_metrics.json.prev beside them (the demo moved its report files on its own)."""
    (tmp_path / "checkpoints.prev" / "step_0000002").mkdir(parents=True)  # demo 1, set aside by demo 2
    for name in ("metrics.jsonl.prev", "REPORT.md.prev", "final_metrics.json.prev", "curves.png.prev"):
        (tmp_path / name).write_text("one")
    (tmp_path / "checkpoints" / "step_0000004").mkdir(parents=True)  # demo 2: checkpoints and a log, no report
    (tmp_path / "metrics.jsonl").write_text('{"tag": "two"}\n')
    set_aside_with_checkpoints(tmp_path, lambda: move_aside(tmp_path / "checkpoints", "checkpoints"))
    assert (tmp_path / "checkpoints.prev" / "step_0000004").is_dir()
    assert '"two"' in (tmp_path / "metrics.jsonl.prev").read_text()
    for name in ("REPORT.md.prev", "final_metrics.json.prev", "curves.png.prev"):
        assert not (tmp_path / name).exists(), name


def test_a_fresh_run_with_no_checkpoints_beside_it_sets_its_outputs_aside_too(tmp_path):
    """A folder with a log and a model but no checkpoints (removed by hand): the fresh run's log went aside and
    the model stayed, as if it were the new run's."""
    (tmp_path / "metrics.jsonl").write_text('{"tag": "one"}\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tag").write_text("one")
    set_aside_previous_log(tmp_path)
    assert not (tmp_path / "model").exists() and (tmp_path / "model.prev" / "tag").read_text() == "one"


def test_a_run_whose_starting_model_is_inside_its_out_is_refused(tmp_path):
    """`vit finetune base/model --out base` wrote base/model over the model it started from; a second fine-tune
    set the first's checkpoints aside over checkpoints.prev (the original run): no copy was left."""
    from kizuna.train.config import make_config
    from kizuna.train.supervised import make_supervised_config

    (tmp_path / "base" / "model").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"model to start from \(--init .*base/model\) is inside --out .*base"):
        make_supervised_config({}, init=str(tmp_path / "base" / "model"), out=str(tmp_path / "base"), data="d")
    with pytest.raises(ValueError, match=r"\(--model .*base/model\) is inside --out"):
        make_config({}, model=str(tmp_path / "base" / "model"), out=str(tmp_path / "base"))
    with pytest.raises(ValueError, match=r"is inside --out"):  # --out the model folder itself
        make_supervised_config({}, init=str(tmp_path / "base" / "model"), out=str(tmp_path / "base" / "model"), data="d")
    make_supervised_config({}, init=str(tmp_path / "base" / "model"), out=str(tmp_path / "ft"), data="d")
    make_config({}, model="ViT-mu-8", out=str(tmp_path / "base"))  # a preset is no path


def test_a_resume_from_an_earlier_step_sets_the_abandoned_branchs_best_aside(tmp_path, capsys):
    """`--resume RUN/checkpoints/step_2` of a run whose best/ was saved at step 4: best/ stayed the abandoned
    branch's model while the resumed run's best value was step 2's, so a later evaluation beating that value
    replaced a better model, and one that did not left the other branch's model as this run's best."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny import tiny_config

    from kizuna.analysis.report import read_extra
    from kizuna.train.contrastive import ContrastiveTrainer

    run = tmp_path / "run"
    first = ContrastiveTrainer(tiny_config(run, steps=4, save_every=2, keep_last=5))
    first.train()
    first.ckpt.best_value = None
    first.ckpt.metric = "zeroshot/top1"
    first.ckpt.update_best(4, first.model, {"zeroshot/top1": 0.22})  # the branch's best, after step 2
    capsys.readouterr()
    again = ContrastiveTrainer(tiny_config(run, steps=4, save_every=2, keep_last=5,
                                           resume=str(run / "checkpoints" / "step_0000002")))
    assert "moved to best.abandoned" in capsys.readouterr().err
    assert not (run / "checkpoints" / "best").exists()
    assert read_extra(run / "checkpoints" / "best.abandoned")["step"] == 4
    again.ckpt.metric = "zeroshot/top1"
    again.ckpt.update_best(2, again.model, {"zeroshot/top1": 0.1})  # best/ is the resumed run's own again
    assert read_extra(run / "checkpoints" / "best")["step"] == 2
    ContrastiveTrainer(tiny_config(run, steps=4, save_every=2, keep_last=5, resume="latest"))  # step 4 >= best's 2
    assert (run / "checkpoints" / "best").is_dir()
