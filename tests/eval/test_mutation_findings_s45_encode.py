"""Mutation testing of stop 45's heartbeat (kizuna.eval.encode._heartbeat / progress_bar without a bar): its unit's
plural, when it speaks (every HEARTBEAT_SECONDS since the last line, at exactly the interval too), what it counts,
and that it is made only where no bar is drawn."""
import itertools
from types import SimpleNamespace


import kizuna.eval.encode as encode


class _Clock:
    """time.monotonic as the heartbeat reads it: ``ticks`` in turn, then the last one again."""

    def __init__(self, *ticks):
        self.ticks = itertools.chain(ticks, itertools.repeat(ticks[-1]))

    def __call__(self):
        return next(self.ticks)


def _beat(monkeypatch, capsys, items, clock, every=30.0, total=None, desc="pass", unit="batch"):
    monkeypatch.setattr(encode, "HEARTBEAT_SECONDS", every)
    monkeypatch.setattr(encode, "time", SimpleNamespace(monotonic=clock))  # (encode's own, not the module)
    assert list(encode._heartbeat(items, total, desc, unit)) == list(items)
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


def test_a_unit_ending_in_s_takes_es(monkeypatch, capsys):
    """Kills: "es" only after "ch" (a unit "class" said "classs")."""
    assert _beat(monkeypatch, capsys, [1], _Clock(0.0, 0.0), every=0.0, unit="class") == ["pass: 1 classes after 0 s"]
    assert _beat(monkeypatch, capsys, [1], _Clock(0.0, 0.0), every=0.0, unit="image") == ["pass: 1 images after 0 s"]


def test_it_speaks_at_exactly_the_interval(monkeypatch, capsys):
    """Kills: ``>=`` made ``>`` (a step of exactly HEARTBEAT_SECONDS said nothing)."""
    lines = _beat(monkeypatch, capsys, [1, 2], _Clock(0.0, 30.0, 60.0), total=2)
    assert lines == ["pass: 1/2 batches after 30 s", "pass: 2/2 batches after 60 s"]


def test_it_speaks_every_interval_since_its_last_line_and_counts_from_the_start(monkeypatch, capsys):
    """Items at 0 (start), 31, 40, 62, 70 s: lines after 31 and 62 s only. Kills: ``last`` not moved on (a line
    after every item past the first interval); the interval measured from the start; the elapsed time measured
    from the last line; the count from 0; no desc."""
    lines = _beat(monkeypatch, capsys, "abcd", _Clock(0.0, 31.0, 40.0, 62.0, 70.0), total=4, desc=None)
    assert lines == ["working: 1/4 batches after 31 s", "working: 3/4 batches after 62 s"]


def test_without_a_total_no_slash(monkeypatch, capsys):
    """Kills: the "/total" written whatever the total (a pass of unknown length said "3/None")."""
    assert _beat(monkeypatch, capsys, [1], _Clock(0.0, 45.0), total=None) == ["pass: 1 batches after 45 s"]


def test_progress_bar_disabled_gives_a_heartbeat_and_enabled_a_bar(monkeypatch):
    """Kills: the heartbeat returned as the bare iterable on the main process (a long pass without a bar silent);
    the bar's unit dropped (tqdm's "it")."""
    beat = encode.progress_bar(range(3), total=3, desc="d", enabled=False)
    assert not isinstance(beat, range) and list(beat) == [0, 1, 2]
    bar = encode.progress_bar(range(3), total=3, desc="d", enabled=True, unit="image")
    try:
        assert bar.unit == "image"
    finally:
        bar.close()


def test_off_the_main_process_no_heartbeat(monkeypatch):
    """Kills: the heartbeat made on every rank (each rank's line repeated)."""
    monkeypatch.setattr(encode, "is_main", lambda: False)
    items = range(3)
    assert encode.progress_bar(items, total=3, enabled=False) is items
    assert encode.progress_bar(items, total=3, enabled=True) is items
