"""The timing rule of the benchmark suite: medians over >= 5 interleaved runs, more rounds when noisy."""
import pytest

from benchmarks import common


class FakeClock:
    """perf_counter that moves only when a contender 'runs' (each call advances it by a scripted time)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def contender(self, durations):
        it = iter(durations)

        def run():
            self.now += next(it)
        return run


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(common.time, "perf_counter", c)
    return c


def test_quiet_runs_stop_at_five_and_alternate(clock):
    order = []
    a = clock.contender([1.0] * 20)
    b = clock.contender([2.0] * 20)
    t = common.interleaved({"a": lambda: (order.append("a"), a()), "b": lambda: (order.append("b"), b())},
                           reps=5, warmup=1, items=4, max_reps=9)
    assert len(t["a"].runs) == len(t["b"].runs) == 5
    assert order == ["a", "b"] * 6  # one warm-up round, then five timed rounds, always alternating
    assert t["a"].median == 1.0 and t["b"].rate == 2.0  # 4 items in 2 s


def test_one_outlier_does_not_add_rounds_but_two_do(clock):
    one = clock.contender([1.0, 1.0, 5.0, 1.0, 1.0, 1.0] + [1.0] * 10)
    t = common.interleaved({"x": one}, reps=5, warmup=1, max_reps=9)
    assert len(t["x"].runs) == 5 and t["x"].median == 1.0

    # Two slow runs out of five: the middle three disagree (1.0 .. 3.0), so rounds are added; the median of
    # the longer series lands back on the quiet value.
    two = clock.contender([1.0, 3.0, 1.0, 3.0, 1.0, 1.0] + [1.0] * 10)
    t = common.interleaved({"x": two}, reps=5, warmup=1, max_reps=9)
    assert 5 < len(t["x"].runs) <= 9 and t["x"].median == 1.0


def test_rounds_stop_at_max_reps_and_a_noisy_contender_extends_all(clock):
    noisy = clock.contender([1.0] + [1.0, 2.0, 3.0, 4.0] * 10)
    calm = clock.contender([1.0] * 50)
    t = common.interleaved({"noisy": noisy, "calm": calm}, reps=5, warmup=1, max_reps=7)
    assert len(t["noisy"].runs) == len(t["calm"].runs) == 7  # whole rounds: both contenders stay paired


def test_fewer_than_five_runs_is_refused():
    with pytest.raises(ValueError, match=">= 5"):
        common.interleaved({"x": lambda: None}, reps=3, warmup=0)


def test_page_faults_are_counted_per_call_for_each_contender(clock, monkeypatch):
    faults = {"n": 0}
    monkeypatch.setattr(common, "minor_faults", lambda: faults["n"])
    a = clock.contender([1.0] * 20)

    def faulty():  # 300 fresh pages per call
        faults["n"] += 300
        a()

    t = common.interleaved({"faulty": faulty, "clean": clock.contender([1.0] * 20)}, reps=5, warmup=1, inner=2)
    assert t["faulty"].faults_per_call == 300 and t["clean"].faults_per_call == 0
    assert t["faulty"].as_dict()["minor_faults_per_call"] == 300
    monkeypatch.setattr(common, "minor_faults", lambda: None)  # no `resource` module (Windows)
    t = common.interleaved({"a": clock.contender([1.0] * 10)}, reps=5, warmup=0)
    assert t["a"].faults_per_call is None


def test_recorded_command_carries_the_settings_that_change_measurements():
    from benchmarks.__main__ import _command

    env = {"KIZUNA_GEMM": "onednn", "MALLOC_TRIM_THRESHOLD_": "4294967296", "HOME": "/root", "PATH": "/bin"}
    cmd = _command(["--only", "encode"], env, "/w/.venv/bin/python")
    assert cmd == ("KIZUNA_GEMM=onednn MALLOC_TRIM_THRESHOLD_=4294967296 "
                   ".venv/bin/python -m benchmarks --only encode")
    assert _command(["--render"], {"HOME": "/root"}, "/w/.venv/bin/python") == ".venv/bin/python -m benchmarks --render"
    assert _command(["--render"], {}, "/opt/torch/bin/python3") == "python3 -m benchmarks --render"  # a lent GPU
