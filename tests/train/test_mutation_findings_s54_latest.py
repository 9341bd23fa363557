"""Session 54 mutation findings: CheckpointManager.latest() reading past a `latest` written a save late, on
hand-made step folders (no training)."""
import json
import warnings

from kizuna.models.checkpoint import FORMAT_KEY
from kizuna.train.checkpointing import CheckpointManager


def _step(ckpts, step, save_id, follows):
    folder = ckpts / f"step_{step:07d}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({FORMAT_KEY: {"extra": {"save_id": save_id,
                                                                            "follows": follows}}}))


def test_latest_behind_is_warned_once_however_often_it_is_read(tmp_path):
    """Kills: the `_warned_behind` guard dropped (every latest() call warned again: a resume reads it several
    times, and the interrupt's line reads it once more)."""
    ckpts = tmp_path / "checkpoints"
    _step(ckpts, 2, "a", None)
    _step(ckpts, 4, "b", "a")
    (ckpts / "latest").write_text("step_0000002")
    manager = CheckpointManager(tmp_path)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert manager.latest().name == "step_0000004"
        assert manager.latest().name == "step_0000004"
    assert sum("saved step_0000004 after it" in str(w.message) for w in said) == 1


def test_latest_in_step_says_nothing(tmp_path):
    """Kills: the warning's test turned around (said when `latest` names the last save)."""
    ckpts = tmp_path / "checkpoints"
    _step(ckpts, 2, "a", None)
    _step(ckpts, 4, "b", "a")
    (ckpts / "latest").write_text("step_0000004")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert CheckpointManager(tmp_path).latest().name == "step_0000004"
    assert not [w for w in said if "after it" in str(w.message)]
