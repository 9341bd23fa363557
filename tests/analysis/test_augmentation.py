"""`kizuna vit augment`: the recipe's augmentation through both paths, as a figure and statistics."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kizuna.analysis.augmentation import pixel_stats
from kizuna.apps.cli import main


def test_pixel_stats_count_what_they_name():
    grey = np.full((2, 4, 4, 3), 128, dtype=np.uint8)
    grey[0, 0, :] = 0  # one row of black in the first image
    grey[1, 0, 0] = (255, 10, 10)  # one saturated pixel
    st = pixel_stats(grey)
    assert st["images"] == 2
    assert st["grey_fill"] == pytest.approx(27 / 32) and st["black"] == pytest.approx(4 / 32)
    assert st["saturated"] == pytest.approx(1 / 32)
    assert st["mean"] == pytest.approx(grey.mean()) and st["std"] == pytest.approx(grey.std())


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aug")
    rs = np.random.RandomState(0)
    (root / "train").mkdir()
    with tarfile.open(root / "train" / "000000.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(40):
            buf = io.BytesIO()
            Image.fromarray(rs.randint(0, 256, (20, 20, 3), dtype=np.uint8)).save(buf, format="PNG")
            for name, blob in ((f"{i:09d}.cls", str(i % 2).encode()), (f"{i:09d}.png", buf.getvalue())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    (root / "classnames.txt").write_text("odd\neven\n")
    return root


def test_cli_writes_the_grid_and_both_paths_statistics(shards, tmp_path, capsys):
    out = tmp_path / "aug"
    rc = main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", "--randaug-ops", "2",
               "--images", "3", "--draws", "2", "--stats-images", "40", "--out", str(out)])
    assert rc == 0
    assert (out / "augment.png").stat().st_size > 5000
    record = json.loads((out / "augment.json").read_text())
    assert record["image_size"] == 16 and "RandAugment 2 ops" in record["recipe"]
    for path in ("original", "loader", "device"):
        assert record[path]["images"] == 40
    # the augmentation adds grey fill and black padding the originals do not have, on both paths alike
    assert record["original"]["black"] < 0.01
    for path in ("loader", "device"):
        assert record[path]["black"] > 0.03 and record[path]["grey_fill"] > 0.03
    assert abs(record["loader"]["mean"] - record["device"]["mean"]) < 10
    assert "grey fill" in capsys.readouterr().out


def test_cli_says_a_random_resized_crop_has_no_device_path(shards, tmp_path, capsys):
    out = tmp_path / "rrc"
    rc = main(["vit", "augment", "--data", str(shards / "train"), "--image-size", "16", "--crop", "rrc",
               "--images", "2", "--draws", "1", "--stats-images", "8", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "augment.json").read_text())
    assert record["device"] is None and "no device path" in record["device_note"]
    assert "no device path" in capsys.readouterr().out
