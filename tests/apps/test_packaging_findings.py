"""A user's installation: `python -m kizuna`, and a broken TensorBoard that must not end a run."""
import subprocess
import sys
import types

import pytest

from kizuna.train.logging import MetricLogger, read_metrics


def test_python_dash_m_kizuna_is_the_kizuna_command():
    out = subprocess.run([sys.executable, "-m", "kizuna", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # "No module named kizuna.__main__"
    assert out.stdout.startswith("kizuna ")


def test_a_broken_tensorboard_is_left_out_with_a_warning_not_the_end_of_the_run(tmp_path, monkeypatch):
    broken = types.ModuleType("torch.utils.tensorboard")

    def writer(*args, **kwargs):
        raise TypeError("Descriptors cannot be created directly")  # protobuf 4 against an old tensorboard

    broken.SummaryWriter = writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", broken)
    logger = MetricLogger(tmp_path)
    with pytest.warns(UserWarning, match="TensorBoard could not start.*TypeError"):
        logger.log(1, {"loss": 1.0})
    logger.log(2, {"loss": 0.5})  # warned once, and the log goes on
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [1, 2]
