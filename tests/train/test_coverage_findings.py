"""Code no test ran (found by running the suite under coverage and driving each untested line)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from kizuna.apps.cli import main


def test_a_validation_set_of_which_no_image_decodes_is_an_error_not_a_perfect_loss(tmp_path, capsys):
    """Every validation image undecodable: scored over nothing, it was top-1 0.0 and loss 0.0 (a perfect loss)
    at every evaluation, best/ was written from it and the run ended with exit 0; `vit eval` refuses the folder."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(4 if split == "train" else 2):
                path = tmp_path / split / c / f"{i}.png"
                if split == "val":
                    path.write_bytes(b"\x89PNG\r\n\x1a\nxx")  # no image
                else:
                    Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(path)
    out = tmp_path / "run"
    rc = main(["vit", "train", "--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"),
               "--model", "mu/8", "--image-size", "16", "--batch-size", "4", "--steps", "2", "--eval-every", "2",
               "--threads", "1", "--workers", "0", "--progress", "false", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "val: none of its 4 validation images could be used: skipped 4 samples: corrupt_image=4" in err
    assert not (out / "checkpoints" / "best").exists()
    assert (out / "checkpoints" / "step_0000002").is_dir()  # the step is kept, to resume once the data is fixed
