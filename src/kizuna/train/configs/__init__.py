"""The built-in training configs (``--config NAME``): each module's ``get_config()`` returns a dict of settings."""
from __future__ import annotations

import os


def shared_folder() -> str:
    """The folder holding the shared data (``data/flickr8k``, ``data/cifar10``) of the built-in configs: the
    KIZUNA_SHARED environment variable, else ``../shared``, relative to the current folder (beside a checkout).
    Where that is missing, the "not found" error says how to point at it
    (:func:`kizuna.data.sources.shared_data_hint`)."""
    return os.environ.get("KIZUNA_SHARED") or "../shared"
