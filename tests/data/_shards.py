"""Tiny WebDataset shards, CSVs and image folders for the data-pipeline tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import torch
from PIL import Image


def image_bytes(color=(200, 30, 30), size=(8, 8), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def color_of(i: int) -> tuple[int, int, int]:
    """A colour that identifies sample i after a lossy JPEG round trip (coarse steps)."""
    return (16 + 32 * (i % 7), 16 + 32 * ((i // 7) % 7), 16 + 32 * ((i // 49) % 7))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return path


def pair_members(keys, captions=None, fmt="jpg") -> list[tuple[str, bytes]]:
    """Members for good samples: KEY.<fmt> + KEY.txt (+ KEY.json); captions[k] may be a list."""
    out = []
    for n, key in enumerate(keys):
        pil = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        out.append((f"{key}.{fmt}", image_bytes(color_of(int(key)), fmt=pil)))
        out.append((f"{key}.json", b'{"key": "%s"}' % key.encode()))
        cap = captions[n] if captions is not None else f"caption {key}"
        cap = "\n".join(cap) if isinstance(cap, (list, tuple)) else cap
        out.append((f"{key}.txt", cap.encode()))
    return out


def make_pair_shard(path: Path, start: int, n: int, captions=None) -> list[str]:
    keys = [f"{i:09d}" for i in range(start, start + n)]
    write_tar(path, pair_members(keys, captions))
    return keys


def make_shard_dir(root: Path, n_shards: int, per_shard: int, nshards_file=False,
                   names="{:06d}.tar") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        p = root / names.format(s)
        make_pair_shard(p, s * per_shard, per_shard)
        paths.append(p)
    if nshards_file:
        (root / "nshards.txt").write_text(str(n_shards))
    return paths


def truncate(path: Path, keep_bytes: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)


def member_offset(path: Path, name: str) -> tuple[int, int]:
    with tarfile.open(path) as tf:
        m = tf.getmember(name)
        return m.offset_data, m.size


def to_tensor(img: Image.Image) -> torch.Tensor:
    """Stand-in for the integrator's transform: PIL -> float CHW in [0, 1]."""
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(
        img.size[1], img.size[0], 3).permute(2, 0, 1).float().div(255)


def random_crop(img: Image.Image) -> torch.Tensor:
    """A random transform (uses torch's RNG), to check augmentations are reproducible."""
    x = to_tensor(img)
    noise = torch.rand(())
    return x + noise


def make_folder(root: Path, n: int) -> None:
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i}.png").write_bytes(image_bytes(color_of(i), fmt="PNG"))
        (sub / f"img{i}.txt").write_text(f"folder caption {i}\nsecond {i}")


def write_csv(path: Path, rows: list[tuple[str, str]], sep=",", header=("filepath", "title")) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)


def bomb_png(side: int = 20000) -> bytes:
    """A valid 1x1 PNG whose header claims ``side`` x ``side`` pixels (Pillow refuses it at open)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", side, side)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)
