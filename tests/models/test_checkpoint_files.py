"""Files kizuna writes atomically (checkpoints, configs, logs) keep ordinary permissions."""
import os
import stat
from pathlib import Path

import pytest

from kizuna.models.checkpoint import atomic_write


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_atomically_written_file_is_not_left_private_to_its_owner(tmp_path):
    """The temp file behind the rename is created 0600: train_config.json, `latest` and the model files were
    unreadable to a group that shares the run folder."""
    umask = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write(new, lambda tmp: Path(tmp).write_text("{}"))
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write(kept, lambda tmp: Path(tmp).write_text("new"))
        assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
        with pytest.raises(RuntimeError):  # a failed write leaves the old file and no temp file behind
            atomic_write(kept, lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
        assert kept.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "new.json"]
    finally:
        os.umask(umask)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_checkpoint_folders_have_a_new_folders_permissions(tmp_path):
    """Step folders and best/ are filled under a mkdtemp name (0700) and renamed into place."""
    import torch

    from kizuna.models.vit import VisionConfig, VisionTransformer
    from kizuna.train.checkpointing import CheckpointManager

    umask = os.umask(0o022)
    try:
        model = VisionTransformer(VisionConfig(image_size=8, patch_size=4, width=8, depth=1, heads=2, num_classes=2))
        manager = CheckpointManager(tmp_path, metric="val_top1")
        manager.save(1, model, {"step": 1, "optimizer": {}, "rng": {}, "t": torch.zeros(1)}, {"val_top1": 0.5})
        for folder in (tmp_path / "checkpoints" / "step_0000001", tmp_path / "checkpoints" / "best"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
            assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644, folder
    finally:
        os.umask(umask)
