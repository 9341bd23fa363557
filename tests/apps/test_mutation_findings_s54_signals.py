"""Session 54 mutation findings: what each stopping signal raises and exits with (apps/cli.py Terminated.for_signal,
_main)."""
import pytest

from kizuna.apps import cli
from kizuna.apps.cli import Terminated


def test_each_signal_names_its_own_exception_and_status():
    """Kills: for_signal testing the loop's "Ctrl-C" label for the signal's name (a Ctrl-C raised Terminated, exit
    143, a preemption's status), and SIGHUP's 129 folded into 143."""
    assert type(Terminated.for_signal("SIGINT")) is KeyboardInterrupt
    assert isinstance(Terminated.for_signal("SIGHUP"), Terminated) and Terminated.for_signal("SIGHUP").code == 129
    assert Terminated.for_signal("SIGTERM").code == 143


def test_a_hang_up_exits_129_saying_so(monkeypatch, capsys):
    """Kills: _main reading every Terminated as SIGTERM's (exit 143, "terminated") where the terminal closed."""
    def hung_up(argv, command):
        raise Terminated(129)

    monkeypatch.setattr(cli, "_run_command", hung_up)
    with pytest.raises(SystemExit) as ended:
        cli._main(["info"])
    assert ended.value.code == 129
    assert "kizuna: hung up (SIGHUP: the terminal closed)" in capsys.readouterr().err

    def terminated(argv, command):
        raise Terminated()

    monkeypatch.setattr(cli, "_run_command", terminated)
    with pytest.raises(SystemExit) as ended:
        cli._main(["info"])
    assert ended.value.code == 143 and "kizuna: terminated" in capsys.readouterr().err


@pytest.fixture
def default_signals():
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield signal
    for s, h in saved.items():
        signal.signal(s, h)


def test_a_commands_hang_up_handler_goes_back_and_a_second_one_is_the_default(default_signals):
    """Kills: _SigtermRaises' exit leaving its SIGHUP handler in place (a program that ran main() kept it), and the
    handler not putting the default back before it raises (a second hang-up raised again instead of ending)."""
    signal = default_signals
    with cli._SigtermRaises() as raises:
        assert signal.getsignal(signal.SIGHUP) == raises._hang_up
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    with cli._SigtermRaises() as raises:
        with pytest.raises(Terminated) as ended:
            raises._hang_up(signal.SIGHUP, None)
        assert ended.value.code == 129 and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_the_training_loop_takes_a_default_hang_up_and_leaves_an_ignored_one(default_signals):
    """Kills: StopOnInterrupt without SIGHUP (the terminal's close ended a run unsaved), and its host check made for
    SIGTERM alone again (an ignored SIGHUP, nohup's, taken over: the run stopped when the terminal closed)."""
    signal = default_signals
    from kizuna.train.trainer import StopOnInterrupt

    stop = StopOnInterrupt()
    with stop:
        assert signal.getsignal(signal.SIGHUP) == stop._handle
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with StopOnInterrupt():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_a_helper_forked_from_a_worker_gets_the_default_hang_up(default_signals):
    """Kills: _plain_sigterm leaving the worker's SIGHUP handler (caught, a hang-up no longer ended a helper the
    dataset forked)."""
    signal = default_signals
    from kizuna.data.loader import _plain_sigterm

    signal.signal(signal.SIGHUP, lambda signum, frame: None)
    _plain_sigterm()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_python_m_kizuna_runs_the_console_script(monkeypatch):
    """Kills: __main__ calling main() rather than console_main() (Ctrl-C during the interpreter's shutdown printed a
    traceback for `python -m kizuna`)."""
    import runpy

    called = []
    monkeypatch.setattr(cli, "console_main", lambda: called.append("console_main") or 0)
    monkeypatch.setattr(cli, "main", lambda argv=None: called.append("main") or 0)
    with pytest.raises(SystemExit):
        runpy.run_module("kizuna", run_name="__main__")
    assert called == ["console_main"]


def test_a_process_forked_from_a_command_dies_of_a_hang_up_as_by_default(default_signals):
    """Kills: _hang_up's check of the process dropped (a child forked from a command, a dataset's helper,
    raised the parent's Terminated on the terminal's SIGHUP instead of ending as by default)."""
    import os

    signal = default_signals
    with cli._SigtermRaises() as raises:
        pid = os.fork()
        if pid == 0:  # the child: ends of the signal, or says what it did instead
            try:
                raises._hang_up(signal.SIGHUP, None)
            except BaseException:
                os._exit(7)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP, status
