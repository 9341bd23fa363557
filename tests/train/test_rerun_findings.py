"""A second run into the same --out (found by running commands twice into one folder)."""
from __future__ import annotations

import pytest

from kizuna.models.checkpoint import move_aside
from kizuna.train.demo import REPORT_FILES
from kizuna.train.logging import set_aside_previous_log, set_aside_with_checkpoints
from kizuna.train.supervised import SupervisedTrainer

VIT = SupervisedTrainer.run_outputs  # curves.png and model/
DEMO = (("curves.png", "training curves"),) + tuple((name, "demo report") for name in REPORT_FILES)


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
    set_aside_with_checkpoints(tmp_path, lambda: move_aside(tmp_path / "checkpoints", "checkpoints"), VIT)
    for name in ("checkpoints", "metrics.jsonl", "curves.png", "model"):
        assert not (tmp_path / name).exists(), name
    assert (tmp_path / "model.prev" / "tag").read_text() == "one"
    assert (tmp_path / "curves.png.prev").read_text() == "one"
    assert "earlier run's final model: moved to model.prev" in capsys.readouterr().err
    assert (tmp_path / "REPORT.md").read_text() == "one"  # not a file `vit train` writes: a user's, left alone


def test_a_fresh_demo_sets_the_earlier_demos_report_aside_with_its_checkpoints(tmp_path):
    _run_folder(tmp_path, "one")
    set_aside_with_checkpoints(tmp_path, lambda: move_aside(tmp_path / "checkpoints", "checkpoints"), DEMO)
    assert (tmp_path / "REPORT.md.prev").read_text() == "one" and not (tmp_path / "REPORT.md").exists()
    assert (tmp_path / "model" / "tag").read_text() == "one"  # the demo writes no model/


def test_the_prev_set_stays_one_runs_when_the_run_set_aside_wrote_no_report(tmp_path):
    """Demo 2 stopped before its report: a third demo set demo 2's checkpoints and log aside but kept demo 1's
    REPORT.md.prev and final_metrics.json.prev beside them (the demo moved its report files on its own)."""
    (tmp_path / "checkpoints.prev" / "step_0000002").mkdir(parents=True)  # demo 1, set aside by demo 2
    for name in ("metrics.jsonl.prev", "REPORT.md.prev", "final_metrics.json.prev", "curves.png.prev"):
        (tmp_path / name).write_text("one")
    (tmp_path / "checkpoints" / "step_0000004").mkdir(parents=True)  # demo 2: checkpoints and a log, no report
    (tmp_path / "metrics.jsonl").write_text('{"tag": "two"}\n')
    set_aside_with_checkpoints(tmp_path, lambda: move_aside(tmp_path / "checkpoints", "checkpoints"), DEMO)
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
    set_aside_previous_log(tmp_path, VIT)
    assert not (tmp_path / "model").exists() and (tmp_path / "model.prev" / "tag").read_text() == "one"


def test_a_fresh_run_into_a_folder_with_no_earlier_run_moves_none_of_the_users_files(tmp_path):
    """With no earlier run's log or checkpoints there, a user's REPORT.md and model/ were moved aside as an earlier
    run's (and deleted by the next fresh run, which removes the old .prev)."""
    (tmp_path / "REPORT.md").write_text("mine")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "readme.txt").write_text("mine")
    for _ in range(2):
        set_aside_previous_log(tmp_path, VIT + DEMO)
    assert (tmp_path / "REPORT.md").read_text() == "mine" and (tmp_path / "model" / "readme.txt").read_text() == "mine"


def test_a_run_whose_starting_model_is_inside_its_out_is_refused(tmp_path):
    """`vit finetune base/model --out base` wrote base/model over the model it started from; a second fine-tune
    set the first's checkpoints aside over checkpoints.prev (the original run): no copy was left."""
    from kizuna.train.config import make_config
    from kizuna.train.supervised import make_supervised_config

    (tmp_path / "base" / "model").mkdir(parents=True)
    with pytest.raises(ValueError,
                       match=r"model to start from \(the checkpoint to fine-tune: .*base/model\) is inside --out .*base"):
        make_supervised_config({}, init=str(tmp_path / "base" / "model"), out=str(tmp_path / "base"), data="d")
    with pytest.raises(ValueError, match=r"\(--model: .*base/model\) is inside --out"):
        make_config({}, model=str(tmp_path / "base" / "model"), out=str(tmp_path / "base"))
    with pytest.raises(ValueError, match=r"is inside --out"):  # --out the model folder itself
        make_supervised_config({}, init=str(tmp_path / "base" / "model"), out=str(tmp_path / "base" / "model"), data="d")
    make_supervised_config({}, init=str(tmp_path / "base" / "model"), out=str(tmp_path / "ft"), data="d")
    (tmp_path / "proj" / "pretrained" / "vit").mkdir(parents=True)  # in OUT, where a run writes nothing: fine
    make_supervised_config({}, init=str(tmp_path / "proj" / "pretrained" / "vit"), out=str(tmp_path / "proj"), data="d")
    (tmp_path / "base" / "checkpoints" / "step_0000004").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"is inside --out"):  # a run sets checkpoints/ aside
        make_supervised_config({}, init=str(tmp_path / "base" / "checkpoints" / "step_0000004"),
                               out=str(tmp_path / "base"), data="d")
    make_config({}, model="ViT-mu-8", out=str(tmp_path / "base"))  # a preset is no path


def test_a_resume_from_an_earlier_step_keeps_the_left_branchs_better_best(tmp_path, capsys):
    """`--resume RUN/checkpoints/step_2` of a run whose best/ was saved at step 4 (0.22): the resumed run's best
    value was step 2's, so an evaluation beating that value (0.18) replaced a better model. (Moved aside instead, a
    resume that never beat step 2's value ended with no best/ at all.)"""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny import tiny_config

    from kizuna.analysis.report import read_extra
    from kizuna.train.contrastive import ContrastiveTrainer

    run = tmp_path / "run"
    kw = dict(steps=4, save_every=2, keep_last=5, best_metric="probe/shape")
    first = ContrastiveTrainer(tiny_config(run, **kw))
    first.train()
    first.ckpt.best_value = None
    first.ckpt.update_best(4, first.model, {"probe/shape": 0.22})  # the branch's best, after step 2
    capsys.readouterr()
    again = ContrastiveTrainer(tiny_config(run, resume=str(run / "checkpoints" / "step_0000002"), **kw))
    assert "is from step 4, of the branch this resume from step 2 leaves" in capsys.readouterr().err
    assert again.ckpt.best_value == 0.22
    assert not again.ckpt.update_best(3, again.model, {"probe/shape": 0.18})  # worse: best/ stays
    assert read_extra(run / "checkpoints" / "best")["step"] == 4
    assert again.ckpt.update_best(3, again.model, {"probe/shape": 0.3})
    assert read_extra(run / "checkpoints" / "best")["step"] == 3
    ContrastiveTrainer(tiny_config(run, resume="latest", **kw))  # latest is step 4, after best's 3: nothing said
    assert "of the branch" not in capsys.readouterr().err
