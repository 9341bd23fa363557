"""Mutation findings (session 51) on ``atomic_write_texts``, the write of files that belong together (a suite's
results.md and results.json): all written before any is renamed, undone whole on an error, the renames not cut by
Ctrl-C, and text of any bytes written as ``atomic_write_text`` writes it."""
import errno
import os
import signal

import pytest

from kizuna.eval import suite
from kizuna.models import checkpoint
from kizuna.models.checkpoint import atomic_write_texts


def _old(tmp_path):
    a, b = tmp_path / "results.md", tmp_path / "results.json"
    a.write_text("old md\n")
    b.write_text("old json\n")
    return a, b


def _temps(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_undecodable_bytes_are_written_as_the_bytes_they_stand_for(tmp_path):
    """A dataset folder's name read under LC_ALL=C holds its bytes as lone surrogates: written as those bytes
    (UTF-8 of the real name), not a UnicodeEncodeError that lost the whole report."""
    a, b = _old(tmp_path)
    name = "データ".encode().decode("ascii", "surrogateescape")  # as os.listdir gives it under an ASCII locale
    atomic_write_texts([(a, f"# model on {name}\n"), (b, "name: \ud800\n")])
    assert a.read_bytes() == "# model on データ\n".encode()
    # a surrogate that stands for no byte (from "\ud800" in a JSON file): written as its escape, not refused
    assert b.read_text(encoding="utf-8") == "name: \\ud800\n"


def test_a_failure_at_the_second_file_leaves_both_old_files_and_no_temp_files(tmp_path):
    """The second file could not be written: the first one's filled temp file is removed, not left beside the
    results as a hidden .results.md.XXXX.tmp (one more at every failed run)."""
    a, _ = _old(tmp_path)
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    with pytest.raises(OSError):
        atomic_write_texts([(a, "new md\n"), (blocked / "results.json", "{}\n")])
    assert a.read_text() == "old md\n"
    assert _temps(tmp_path) == []


def test_ctrl_c_between_the_renames_leaves_both_new_files(tmp_path, monkeypatch):
    """A Ctrl-C right after results.md's rename is held until results.json's is done too, then raised: the pair
    is the new one, not this run's results.md beside the last run's results.json."""
    a, b = _old(tmp_path)
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if os.fspath(dst) == os.fspath(a):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_texts([(a, "new md\n"), (b, "new json\n")])
    monkeypatch.undo()
    assert (a.read_text(), b.read_text()) == ("new md\n", "new json\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_full_disk_at_results_json_keeps_the_last_runs_results_md(tmp_path, monkeypatch):
    """write_results on a disk that fills at results.json: neither file changes (a new results.md beside the last
    run's results.json told of numbers that results.json did not hold)."""
    out = tmp_path / "out"
    out.mkdir()
    a, b = _old(out)
    real = checkpoint.filled_temp

    def filled_temp(path, write_fn):
        if str(path).endswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write_fn)

    monkeypatch.setattr(checkpoint, "filled_temp", filled_temp)
    monkeypatch.setattr(suite, "markdown_report", lambda records: "# new results\n")
    records = [{"model": "x", "dataset": "d", "task": "zeroshot", "metrics": {"acc1": 0.5}, "details": {}}]
    with pytest.raises(OSError):
        suite.write_results(records, out)
    assert (a.read_text(), b.read_text()) == ("old md\n", "old json\n")
