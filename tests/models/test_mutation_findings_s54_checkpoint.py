"""Session 54 mutation findings: `latest` read past to the checkpoints its run saved after the one it names
(models/checkpoint.py saved_after/save_ids/follow_latest), on hand-made step folders (no training)."""
import json
from pathlib import Path

from kizuna.models.checkpoint import FORMAT_KEY, follow_latest, saved_after, save_ids


def _step(ckpts: Path, step: int, save_id=None, follows=None) -> Path:
    folder = ckpts / f"step_{step:07d}"
    folder.mkdir(parents=True)
    extra = {"step": step}
    if save_id is not None:
        extra.update(save_id=save_id, follows=follows)
    (folder / "config.json").write_text(json.dumps({FORMAT_KEY: {"extra": extra}}))
    return folder


def test_two_saves_past_latest_are_followed_to_the_last(tmp_path):
    """Kills: saved_after's later folders sorted from the last down (it stopped at the first one after `latest`'s),
    and `own` not moved on to the candidate taken (a chain of two was followed one link only)."""
    ckpts = tmp_path / "checkpoints"
    _step(ckpts, 2, "a", None)
    _step(ckpts, 4, "b", "a")
    _step(ckpts, 6, "c", "b")
    (ckpts / "latest").write_text("step_0000002")
    assert follow_latest(ckpts / "latest").name == "step_0000006"
    assert saved_after(ckpts / "step_0000004").name == "step_0000006"


def test_a_branch_in_between_is_skipped_and_the_chain_followed(tmp_path):
    """Kills: the comparison `follows == own` turned around (a branch's folder taken, the run's own left)."""
    ckpts = tmp_path / "checkpoints"
    _step(ckpts, 2, "a", None)
    _step(ckpts, 3, "x", "zzz")  # another run's, following something else
    _step(ckpts, 5, "b", "a")
    assert saved_after(ckpts / "step_0000002").name == "step_0000005"


def test_a_checkpoint_without_ids_is_not_read_past(tmp_path):
    """Kills: the later folders searched where the named one records no save id (an older checkpoint): a fresh
    run's first save, which follows nothing (None), was taken for the one saved after it."""
    ckpts = tmp_path / "checkpoints"
    _step(ckpts, 2)  # written before save ids
    _step(ckpts, 4, "b", None)  # a first save: it follows nothing
    assert save_ids(ckpts / "step_0000002") == (None, None)
    assert saved_after(ckpts / "step_0000002").name == "step_0000002"
    (ckpts / "latest").write_text("step_0000002")
    assert follow_latest(ckpts / "latest").name == "step_0000002"


def test_save_ids_are_the_folders_own_then_the_one_it_follows(tmp_path):
    """Kills: save_ids' pair returned the other way round."""
    folder = _step(tmp_path, 7, "mine", "before")
    assert save_ids(folder) == ("mine", "before")
    assert save_ids(tmp_path / "nowhere") == (None, None)


def test_the_depth_check_counts_every_towers_blocks_to_the_tensor(tmp_path):
    """Kills: check_depth_fits' bound loosened (count > tensors + slack) or tightened (>=: a checkpoint with exactly
    one tensor a block refused), its recursion into the towers dropped (the top level has no depth), and the stem
    test turned around (a patch stem's default stem_channels counted, a hybrid's not)."""
    import pytest

    from kizuna.models.checkpoint import CheckpointError, check_depth_fits

    record = {"config": {"vision": {"depth": 3, "stem": "patch", "stem_channels": [8, 8, 8, 8]},
                         "text": {"depth": 2}}}
    check_depth_fits(record, 5, "x")  # one tensor a block: fits (the patch stem's channels are not blocks)
    with pytest.raises(CheckpointError, match="describes 5 blocks"):
        check_depth_fits(record, 4, "x")
    hybrid = {"config": {"vision": {"depth": 3, "stem": "resnet", "stem_channels": [8, 8]}}}
    check_depth_fits(hybrid, 5, "x")
    with pytest.raises(CheckpointError, match="describes 5 blocks"):
        check_depth_fits(hybrid, 4, "x")
    check_depth_fits({"config": {"vision": {"depth": True}}}, 0, "x")  # (a bool is no depth)
