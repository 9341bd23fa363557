"""A CLIP_benchmark classification split for tests: ROOT/train/000000.tar of random PNGs labelled 0/1 in turn,
with ROOT/classnames.txt ("odd", "even")."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def odd_even_shards(root: Path, n: int, side: int) -> Path:
    (root / "train").mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(0)
    with tarfile.open(root / "train" / "000000.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rs.randint(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
            for name, blob in ((f"{i:09d}.cls", str(i % 2).encode()), (f"{i:09d}.png", buf.getvalue())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    (root / "classnames.txt").write_text("odd\neven\n")
    return root


def odd_even_splits(root: Path, train: int = 12, test: int = 4, side: int = 8) -> Path:
    """ROOT/{train,test}/000000.tar of ``side``-px PNGs labelled odd/even in turn, ROOT/classnames.txt."""
    import shutil

    odd_even_shards(root, train, side)
    other = odd_even_shards(root.parent / f"{root.name}-test", test, side)
    (root / "test").mkdir()
    shutil.move(str(other / "train" / "000000.tar"), root / "test" / "000000.tar")
    return root
