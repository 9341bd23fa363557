"""--threads above the cores the process may use (session 53): accepted without a word (`--threads 64` on 2 cores),
the extra threads contending for the cores and slowing every step."""
from __future__ import annotations

import warnings

import pytest

from kizuna.apps.common import usable_cores, warn_if_threads_past_the_cores


def test_threads_past_the_cores_are_warned_of_and_up_to_them_not():
    cores = usable_cores()
    with pytest.warns(UserWarning, match=rf"--threads {cores + 1} is more than the {cores} CPU core"):
        warn_if_threads_past_the_cores(cores + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_threads_past_the_cores(cores)
        warn_if_threads_past_the_cores(0)


def test_a_command_says_it(tmp_path, capsys):
    import kizuna
    from kizuna.apps.cli import main

    kizuna.save_model(kizuna.create_vit("mu/4", image_size=16, num_classes=3), tmp_path / "m")
    threads = usable_cores() + 7
    assert main(["analyze", "positions", str(tmp_path / "m"), "--out", str(tmp_path / "an"), "--threads",
                 str(threads)]) == 0
    assert f"warning: --threads {threads} is more than the" in capsys.readouterr().err
