"""Commands under torchrun that run in one process (session 53): every rank did all the work and wrote the same
files, and `analyze` had one rank refuse its sibling's folder lock as "another kizuna run"."""
from __future__ import annotations

import pytest

from kizuna.apps.cli import main


@pytest.fixture
def rank_1_of_2(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")


@pytest.mark.parametrize("argv", [
    ["embed", "--model", "ViT-mu-8", "--texts", "t.txt", "--out", "e.npy"],
    ["zeroshot", "--model", "ViT-mu-8", "--image", "a.png", "--labels", "a,b"],
    ["analyze", "positions", "ViT-mu-8", "--out", "an"],
    ["vit", "augment", "--data", "d", "--out", "aug"],
])
def test_one_process_commands_are_refused_under_torchrun_in_one_line(tmp_path, monkeypatch, capsys, rank_1_of_2,
                                                                      argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("runs in one process (its work is not split over ranks): run it without torchrun")
    assert "\n" not in err and not list(tmp_path.iterdir())  # nothing written


def test_a_results_folder_is_locked_by_rank_0_only_before_a_process_group(tmp_path, rank_1_of_2):
    from kizuna.eval.suite import results_folder_lock

    with results_folder_lock(tmp_path / "out"):
        assert not (tmp_path / "out").exists()  # rank 1 takes no lock (it refused rank 0's as another run's)
