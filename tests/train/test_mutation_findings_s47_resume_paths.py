"""Mutation findings (stop 47's mutation test of a resume's relative paths, ``refuse_paths_read_elsewhere``):
mutants that no test killed (the s47 tests resume with a plain ``--data data`` only).

Reference: the file a relative path names, from the folder the run started in and from the current one
(``os.path.realpath``): every setting of FILE_SETTINGS, every ``::`` piece of a data spec, a list of specs, and a
pattern's leading folder are read from the current folder on a resume."""
import pytest

from kizuna.train.checkpointing import refuse_paths_read_elsewhere


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A (the run's folder) and B (the current one), each with data/ and ckpt/ of the same names."""
    a, b = tmp_path / "A", tmp_path / "B"
    for root in (a, b):
        (root / "data").mkdir(parents=True)
        (root / "data" / "shard0.tar").write_bytes(b"")
        (root / "ckpt").mkdir()
    monkeypatch.chdir(b)
    return a, b


@pytest.mark.parametrize("restored, flag", [
    ({"classnames": "data/shard0.tar"}, "--classnames data/shard0.tar"),  # kills FILE_SETTINGS without it
    ({"data": "data::more"}, "--data data::more"),  # kills the spec read whole, not by its "::" pieces
    ({"data": "data/sh*.tar"}, "--data data/sh*.tar"),  # kills _path_prefix without dirname (data/sh: no folder)
    ({"data": ["data"]}, "--data"),  # kills a list of specs read as one value
])
def test_each_relative_path_of_the_run_is_checked(elsewhere, restored, flag):
    a, _ = elsewhere
    with pytest.raises(ValueError, match="relative to that folder") as e:
        refuse_paths_read_elsewhere(restored, str(a), a / "run" / "checkpoints" / "step_0000001")
    assert flag in str(e.value)


def test_the_same_files_from_here_and_no_relative_path_go_on(elsewhere):
    a, b = elsewhere
    refuse_paths_read_elsewhere({"data": "data", "init": "ckpt"}, str(b), b / "run")  # started here
    # the model's paths: a resume builds its model from the checkpoint, so they are not read (review of stop 47)
    refuse_paths_read_elsewhere({"init": "ckpt", "model": "ckpt"}, str(a), a / "run")
    refuse_paths_read_elsewhere({"data": str(a / "data"), "model": "ViT-B-32"}, str(a), a / "run")
    refuse_paths_read_elsewhere({"data": "synthetic"}, str(a), a / "run")  # a name, no file in A


def test_a_setting_is_named_once(elsewhere):
    """Kills the ``break`` after a setting's first piece read elsewhere: "data::data" named --data twice, and the
    message said "are relative" of the one flag."""
    a, _ = elsewhere
    with pytest.raises(ValueError) as e:
        refuse_paths_read_elsewhere({"data": "data::data"}, str(a), a / "run")
    assert str(e.value).count("--data") == 1 and "is relative to that folder" in str(e.value)
