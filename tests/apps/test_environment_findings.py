"""The process environment a container or a CI runner gives: a log stream on a full disk ended a training run
mid-step without a checkpoint and without a word (its only channel was the failing one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow  # 13 s (two training runs in subprocesses): `make test-slow`
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_log_stream_on_a_full_disk_loses_the_output_not_the_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kizuna.apps.cli", "train", "--model", "ViT-mu-8", "--data", "synthetic",
           "--synthetic-image-size", "32", "--synthetic-length", "64", "--steps", "4", "--batch-size", "8",
           "--save-every", "2", "--log-every", "1", "--warmup-steps", "1", "--workers", "0", "--out", str(out)]
    with open("/dev/full", "w") as full:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=full, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1  # the work is done, and the status says that output was lost
    assert (out / "checkpoints" / "step_0000004" / "train_state.pt").is_file()
    assert json.loads(done.stdout)["probe/shape"] >= 0  # the other stream works, and holds only the JSON

    with open("/dev/full", "w") as full:  # stdout on the full disk: said on stderr
        done = subprocess.run([sys.executable, "-m", "kizuna.apps.cli", "info", "ViT-mu-8"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1
    assert "kizuna: writing to stdout failed (No space left on device)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("value, expected", [("0", False), ("false", False), (" OFF ", False), ("no", False),
                                             ("1", True), ("True", True), ("on", True), ("yes", True),
                                             ("", "default"), ("maybe", "default")])
@pytest.mark.parametrize("default", [True, False])
def test_kizuna_switches_read_the_words_the_docs_list(monkeypatch, value, expected, default):
    """Only "0" was off: KIZUNA_ONEDNN=false (the escape hatch from a misbehaving oneDNN) did nothing, and an empty
    KIZUNA_FUSE_ACTIVATION turned on what is off by default; docs/PERFORMANCE.md says an empty value is unset and
    another value is warned about and ignored."""
    import warnings

    from kizuna.models.layers import env_switch

    monkeypatch.setenv("KIZUNA_TEST_SWITCH", value)
    if value == "maybe":
        with pytest.warns(RuntimeWarning, match="KIZUNA_TEST_SWITCH='maybe' is not a switch value"):
            assert env_switch("KIZUNA_TEST_SWITCH", default) is default
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert env_switch("KIZUNA_TEST_SWITCH", default) is (default if expected == "default" else expected)


def test_a_run_folder_whose_name_is_not_utf8_logs_without_tensorboard(tmp_path):
    """`--out t$'\\xe9'` (a Latin-1 byte): TensorBoard encodes its paths as UTF-8 and the run ended at its first
    record with "surrogates not allowed", its steps since the last checkpoint lost."""
    pytest.importorskip("tensorboard")
    from kizuna.train.logging import MetricLogger, read_metrics

    out = tmp_path / os.fsdecode(b"t\xe9")
    out.mkdir()
    logger = MetricLogger(out)
    with pytest.warns(UserWarning, match=r"TensorBoard cannot write under b'.*t\\xe9' \(a name that is not UTF-8\)"):
        logger.log(1, {"loss": 1.5})
    logger.log(2, {"loss": 1.25})
    logger.close()
    assert [r["loss"] for r in read_metrics(out / "metrics.jsonl", "train")] == [1.5, 1.25]


def test_a_strict_utf8_stdout_prints_a_file_name_that_is_not_utf8(tmp_path):
    """PYTHONIOENCODING=utf-8 (a strict stream; a desktop's UTF-8 locale is strict too): `kizuna embed --out
    e$'\\xe9'.npy` wrote its files and then failed printing the name: "error", exit 2."""
    (tmp_path / "t.txt").write_text("a cat\n")
    out = os.fsdecode(b"e\xe9.npy")
    done = subprocess.run([sys.executable, "-m", "kizuna.apps.cli", "embed", "--model", "ViT-mu-8", "--texts",
                           "t.txt", "--out", out], cwd=tmp_path, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"to e\xe9.npy" in done.stdout  # the name's own byte, as the file system has it


def test_running_out_of_memory_is_one_line_naming_the_flags(monkeypatch, capsys):
    """A training step past the memory (ulimit -v, a container's limit) was a 30-line torch traceback ending in
    "DefaultCPUAllocator: can't allocate memory", naming no flag that makes the step smaller."""
    from kizuna.apps import cli, embed

    def run(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 374784000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(embed, "run", run)
    assert cli.main(["embed", "--model", "ViT-mu-8", "--texts", "t.txt", "--out", "o.npy"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kizuna embed: error: out of memory ([enforce fail") and "--batch-size" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1

    def other(args):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(embed, "run", other)
    with pytest.raises(RuntimeError, match="some other failure"):  # kept as it was: a traceback for the report
        cli.main(["embed", "--model", "ViT-mu-8", "--texts", "t.txt", "--out", "o.npy"])
