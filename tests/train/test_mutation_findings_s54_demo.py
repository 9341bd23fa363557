"""Session 54 mutation findings: a demo stopped during its last step ends as the signal that stopped it
(train/demo.py _train_and_report). The trainer is a stand-in: only the demo's code after training runs."""
from types import SimpleNamespace

import pytest

from kizuna.apps.cli import Terminated


def _stopped_by(monkeypatch, tmp_path, label):
    import kizuna.train.contrastive as contrastive
    from kizuna.train.demo import _train_and_report

    class Trained:
        run_outputs = ()
        stopped_by = label
        step = 4

        def __init__(self, cfg):
            self.model, self.tokenizer = SimpleNamespace(eval=lambda: "model"), "tokenizer"

        def train(self):
            return {}

    monkeypatch.setattr(contrastive, "ContrastiveTrainer", Trained)
    _train_and_report(SimpleNamespace(probe_size=1), SimpleNamespace(out=str(tmp_path / "demo"), progress=False))


@pytest.mark.parametrize("label, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_demo_stopped_by_a_signal_ends_with_its_status(tmp_path, monkeypatch, capsys, label, code):
    """Kills: the demo's stop raised as a Ctrl-C, or as SIGTERM whatever the signal."""
    with pytest.raises(Terminated) as ended:
        _stopped_by(monkeypatch, tmp_path, label)
    assert ended.value.code == code and f"kizuna demo: {label} during the last step" in capsys.readouterr().err


def test_a_demo_stopped_by_ctrl_c_ends_as_a_ctrl_c(tmp_path, monkeypatch):
    """Kills: the loop's label ("Ctrl-C") passed to Terminated.for_signal as the signal's name (exit 143, a
    preemption's status, for the user's own Ctrl-C)."""
    with pytest.raises(KeyboardInterrupt):
        _stopped_by(monkeypatch, tmp_path, "Ctrl-C")
