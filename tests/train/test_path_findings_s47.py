"""A resume from another folder than the run's (stop 47's review of paths): the run's relative --data was read from
the current folder, so a resume from a folder with a data/ of the same file names and keys trained on it without a
word (CLIP_benchmark's and img2dataset's keys start at 000000000 in every dataset)."""
import shutil

import numpy as np
import pytest
from PIL import Image

from kizuna.apps.cli import main


def _captioned_folder(folder, seed, n=16):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"a photo number {i}")


FLAGS = ["--model", "ViT-mu-8", "--context-length", "24", "--batch-size", "8", "--workers", "0",
         "--warmup-steps", "0", "--threads", "1", "--progress", "false"]


@pytest.fixture
def two_folders(tmp_path, monkeypatch):
    a, b = tmp_path / "A", tmp_path / "B"
    _captioned_folder(a / "data", seed=0)
    _captioned_folder(b / "data", seed=1)  # the same names, other images
    monkeypatch.chdir(a)
    assert main(["train", *FLAGS, "--data", "data", "--steps", "1", "--out", "run"]) == 0
    return a, b


def test_a_resume_from_another_folder_refuses_the_runs_relative_data(two_folders, monkeypatch, capsys):
    a, b = two_folders
    monkeypatch.chdir(b)
    capsys.readouterr()
    assert main(["train", "--resume", "latest", "--out", "../A/run", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert f"the run was started in {a}, and --data data is relative to that folder" in err
    assert f"Resume from {a}, or give the flag again" in err
    assert not (a / "run" / "checkpoints" / "step_0000002").exists()
    # named again, it is this folder's data (the user's choice); from the run's own folder, the run's
    assert main(["train", "--resume", "latest", "--out", "../A/run", "--data", "data", "--print-config"]) == 0
    monkeypatch.chdir(a)
    assert main(["train", "--resume", "latest", "--out", "run", "--steps", "2"]) == 0
    assert (a / "run" / "checkpoints" / "step_0000002").is_dir()


def test_a_resume_where_the_relative_path_names_the_same_files_goes_on(two_folders, monkeypatch):
    """From a folder where the saved path names the same files (a link to A) nothing is refused; nor where the
    folder the run started in is gone (moved with its data: the data fingerprint checks it)."""
    a, b = two_folders
    (b / "link").symlink_to(a)
    monkeypatch.chdir(b / "link")
    assert main(["train", "--resume", "latest", "--out", "run", "--print-config"]) == 0
    moved = a.parent / "A2"
    monkeypatch.chdir(a.parent)
    shutil.move(a, moved)
    monkeypatch.chdir(moved)
    assert main(["train", "--resume", "latest", "--out", "run", "--steps", "2"]) == 0


def test_a_pattern_in_the_starting_folder_itself_is_checked_too(tmp_path, monkeypatch):
    """'*.tar' or '{000000..000099}.tar' run inside an img2dataset folder had no folder part to check, and a resume
    from another folder of shards with the same names trained on them."""
    from pathlib import Path

    from kizuna.train.checkpointing import refuse_paths_read_elsewhere

    for d in ("A", "B"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "000000.tar").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "B")
    for spec in ("*.tar", "{000000..000000}.tar", "./*.tar", "000000.tar"):
        with pytest.raises(ValueError, match="is relative to that folder"):
            refuse_paths_read_elsewhere({"data": spec}, str(tmp_path / "A"), Path("ckpt"))
    # a model's path is no data a resume reads (the model comes from the checkpoint): not checked
    refuse_paths_read_elsewhere({"model": "000000.tar", "data": "synthetic"}, str(tmp_path / "A"), Path("ckpt"))
