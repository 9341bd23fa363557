"""Run folders written by older kizuna read by this one (old-artifact hunt, stop 43): a best/ picked before
--best-mode existed, and a metrics.jsonl holding rows past the run's final model."""
import json
import warnings

import pytest
import torch

from kizuna.models.vit import VisionConfig, VisionTransformer
from kizuna.train.checkpointing import CheckpointManager


def _tiny_vit():
    return VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))


@pytest.mark.parametrize("recorded_mode, restarted", [(None, ("probe/typographic/attack_rate", "max")),
                                                      ("auto", None)])
def test_a_best_picked_before_best_mode_existed_was_the_highest(tmp_path, recorded_mode, restarted):
    """Before --best-mode (2026-12-04) every best/ kept the highest value. A resume read such a run's missing mode as
    "auto" (the minimum, for an attack rate): the old maximum was restored as the best minimum, so best/ kept the
    most-fooled model. Without a recorded mode it is the maximum, and best/ starts afresh."""
    metric = "probe/typographic/attack_rate"
    run = CheckpointManager(tmp_path, metric=metric, mode="max")
    run.update_best(3, _tiny_vit(), {metric: 0.25})
    flags = {"best_metric": metric, **({"best_mode": recorded_mode} if recorded_mode else {})}
    path = run.save(6, _tiny_vit(), {"step": 6, "train_config": flags})
    state = torch.load(path / "train_state.pt", weights_only=False)
    del state["best_metric"], state["best_mode"]  # as written before 2026-12-05
    torch.save(state, path / "train_state.pt")
    resumed = CheckpointManager(tmp_path, metric=metric)  # auto: lowest is best
    resumed.load_into(path, _tiny_vit())
    assert resumed.best_restarted == restarted
    assert resumed.best_value == (None if restarted else 0.25)


def test_compare_runs_leaves_out_rows_the_run_went_back_before(tmp_path):
    """A fresh run into a folder an older kizuna had trained in appended to its metrics.jsonl (before 2026-12-05),
    and a resume from an earlier checkpoint leaves the abandoned branch's later rows: merged by step, the other
    run's step-6 accuracy was the final one of a run that now stands at step 3. A run extended by a resume, or
    one whose resume logged its steps again, keeps every row of its own (and says nothing)."""
    from kizuna.analysis.runs import load_run

    def rows_of(*evals):
        return [{"kind": "eval", "step": s, "time": float(i), "val_top1": v} for i, (s, v) in enumerate(evals)]

    def final(rows):
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return load_run(tmp_path)["final"]

    appended = rows_of((3, 0.11), (6, 0.20)) + [{"kind": "train", "step": 3, "time": 9.0, "loss": 2.3}] \
        + rows_of((3, 0.125))
    with pytest.warns(UserWarning, match=r"1 train/eval row\(s\) at steps 6..6 that the run went back before"):
        assert final(appended) == 0.125
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert final(rows_of((2, 0.1), (4, 0.2)) + [{"kind": "resume", "step": 4}] + rows_of((6, 0.3), (8, 0.4))) == 0.4
        assert final(rows_of((2, 0.1), (4, 0.2), (6, 0.3)) + [{"kind": "resume", "step": 2}]
                     + rows_of((4, 0.25), (6, 0.35))) == 0.35  # logged again: the later records win, as before
    with pytest.warns(UserWarning, match="at steps 6..6"):  # resumed from step 2, now at 4: 6 is another branch's
        assert final(rows_of((2, 0.1), (4, 0.2), (6, 0.3)) + [{"kind": "resume", "step": 2}] + rows_of((4, 0.25))) == 0.25


def test_a_resume_from_an_earlier_checkpoint_keeps_it_over_the_abandoned_branch(tmp_path):
    """"Resume from an earlier one: --resume .../step_0000002" (step 3 had diverged), then the resume's first save
    at step 4 counted the abandoned step 3 as one of its --keep-last 2 and deleted step 2, the checkpoint it
    resumed from: the good one was gone and the bad one named next. The other branch's steps are not counted
    (those the run has passed are deleted; one after the step just written is left, as before)."""
    run = CheckpointManager(tmp_path, keep_last=2)
    for step in (2, 3):
        run.save(step, _tiny_vit(), {"step": step})
    resumed = CheckpointManager(tmp_path, keep_last=2)
    resumed.load_into(tmp_path / "checkpoints" / "step_0000002", _tiny_vit())
    resumed.save(4, _tiny_vit(), {"step": 4})  # the passed step 3 is the other branch's: deleted, not counted
    assert [p.name for p in resumed.step_folders()] == ["step_0000002", "step_0000004"]
    resumed.save(5, _tiny_vit(), {"step": 5})  # this run's own older checkpoints are pruned as ever
    assert [p.name for p in resumed.step_folders()] == ["step_0000004", "step_0000005"]
    again = CheckpointManager(tmp_path, keep_last=2)  # a plain resume from the newest: every older step counts
    again.load_into(tmp_path / "checkpoints" / "step_0000005", _tiny_vit())
    again.save(6, _tiny_vit(), {"step": 6})
    assert [p.name for p in again.step_folders()] == ["step_0000005", "step_0000006"]


def test_a_run_that_wrote_nothing_names_the_checkpoint_it_resumed(tmp_path):
    """Resuming a finished run into a new --out trains nothing and writes nothing there, but the summary said
    "checkpoints: NEW/checkpoints/latest (evaluate or resume from it)", and following it failed."""
    from kizuna.train.checkpointing import nothing_written

    assert nothing_written(tmp_path / "new", "done/checkpoints/latest") == (
        f"nothing was written to {tmp_path / 'new'}; the run's checkpoint is still done/checkpoints/latest")
    CheckpointManager(tmp_path / "new").save(2, _tiny_vit(), {"step": 2})
    assert nothing_written(tmp_path / "new", "done/checkpoints/latest") is None
    assert nothing_written(tmp_path / "fresh", "") is None  # a fresh run always writes its own


def test_the_step_resumed_from_is_read_from_its_folder_and_the_later_ones_are_listed(tmp_path):
    """The resume point came from train_state's step only when it was an int (a tensor or float step from an older
    or hand-made state brought the original deletion back); the later step folders are listed, for the run to say
    that they will go."""
    run = CheckpointManager(tmp_path, keep_last=2)
    run.save(2, _tiny_vit(), {"step": torch.tensor(2)})
    run.save(3, _tiny_vit(), {"step": 3.0})
    resumed = CheckpointManager(tmp_path, keep_last=2)
    resumed.load_into(tmp_path / "checkpoints" / "step_0000002", _tiny_vit())
    assert (resumed.resumed_from, resumed.abandoned) == (2, ["step_0000003"])
    resumed.save(4, _tiny_vit(), {"step": 4})
    assert [p.name for p in resumed.step_folders()] == ["step_0000002", "step_0000004"]
