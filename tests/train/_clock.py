"""A fake perf_counter for the time-budget tests (the `clock` fixture of conftest.py sets it); `_steps` advances it
step by step."""
from kizuna.train.budget import TimeBudget


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _steps(b: TimeBudget, clock: Clock, durations):
    for d in durations:
        clock.now += d
        b.step_done()
