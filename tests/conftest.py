import os
from pathlib import Path

import pytest
import torch

# Tests run on 2 CPU cores; more threads only add contention between pytest and BLAS.
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KIZUNA_SHARED", REPO.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real data not found at {SHARED}/data (set KIZUNA_SHARED to its location)")
    return SHARED
