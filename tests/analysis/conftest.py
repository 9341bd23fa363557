"""Shared by the analysis tests: folders of random-noise PNGs (what `--images` reads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _write_noise_images(folder: Path, count: int, side: int) -> Path:
    """``count`` RGB noise images of ``side`` x ``side`` px as ``folder/im{i}.png`` (seeded)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture(scope="session")
def write_noise_images():
    return _write_noise_images
