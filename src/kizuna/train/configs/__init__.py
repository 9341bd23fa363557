"""The built-in training configs (``--config NAME``): each module's ``get_config()`` returns a dict of settings."""
from __future__ import annotations

import os
import warnings
from pathlib import Path


def shared_folder(data_flags: str) -> str:
    """The folder holding the shared data (``data/flickr8k``, ``data/cifar10``) of the built-in configs: the
    KIZUNA_SHARED environment variable, else ``../shared``, relative to the current folder (beside a checkout).
    When it is unset and there is no ../shared, a warning says so: the run otherwise stopped at "dataset not
    found: ../shared/data/...", which named neither the variable nor the flags that replace the paths."""
    shared = os.environ.get("KIZUNA_SHARED")
    if shared:
        return shared
    if not Path("../shared").is_dir():
        warnings.warn("the built-in config reads its data from ../shared, relative to the current folder "
                      f"({os.getcwd()}), and there is none there: set KIZUNA_SHARED to the shared folder (the one "
                      f"holding data/), or pass {data_flags}", UserWarning, stacklevel=1)
    return "../shared"
