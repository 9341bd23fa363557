"""Counts and timings that were right for small runs and went wrong at scale (found by calling each with large
or awkward inputs and comparing with exact arithmetic)."""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

from kizuna.train.budget import TimeBudget, initial_length

sys.path.insert(0, str(Path(__file__).parent))
from _clock import _steps  # noqa: E402


def test_a_fraction_of_an_epoch_runs_the_steps_it_names():
    """--epochs 0.07 at 100 steps an epoch ran 8 steps (0.07 * 100 = 7.000000000000001, rounded up); 81 of 6,000
    settings were a step long."""
    for steps_per_epoch in (10, 30, 100, 390, 782):
        for hundredths in range(1, 400):
            epochs = hundredths / 100
            cfg = SimpleNamespace(time_budget_minutes=0, steps=0, epochs=epochs)
            exact = max(1, -(-Fraction(hundredths, 100) * steps_per_epoch // 1))
            assert initial_length(cfg, steps_per_epoch) == (exact, True), (epochs, steps_per_epoch)


def test_step_times_are_kept_only_while_a_plan_or_correction_will_read_them(clock):
    """Every step of every run was kept (31 MiB a million steps), with no budget at all."""
    limit_only = TimeBudget(limit_minutes=60.0)
    limit_only.restart()
    limit_only.step_done()
    _steps(limit_only, clock, [0.1] * 50)
    assert len(limit_only.step_times) == 0
    budgeted = TimeBudget(budget_minutes=60.0, calibrate_steps=5)
    budgeted.restart()
    budgeted.step_done()
    _steps(budgeted, clock, [0.1] * 50)
    assert len(budgeted.step_times) == 50
    budgeted.plan(step=50)
    assert budgeted.replan_steps and len(budgeted.step_times) <= 100
    budgeted.replan_steps = []  # no correction left: nothing will read them
    before = len(budgeted.step_times)
    _steps(budgeted, clock, [0.1] * 20)
    assert len(budgeted.step_times) == before


def test_the_warmup_check_does_not_sort_every_step_time_at_every_step(clock, monkeypatch):
    """Before the plan, ready_to_plan measured the pace at every step of the warm-up (a sort of all the steps so
    far): 29 ms a step at 100,000 steps, inside the steps it times."""
    b = TimeBudget(budget_minutes=10**6, calibrate_steps=5)
    b.restart()
    b.step_done()
    calls = []
    real = TimeBudget.seconds_per_step
    monkeypatch.setattr(TimeBudget, "seconds_per_step", lambda self, *a: calls.append(1) or real(self, *a))
    for step in range(1, 2001):
        _steps(b, clock, [0.01])
        assert not b.ready_to_plan(step=step, warmup_steps=10**5)
    assert 0 < len(calls) < 600  # re-measured as the timed steps grow by 1%, not 2,000 times
    assert b._pace_in_warmup() == b.seconds_per_step()  # the pace it uses is the measured one


def test_a_label_too_large_for_a_class_index_is_a_bad_label_not_an_overflow(tmp_path):
    """A .cls of 18446744073709551616 (an ID as a label) crashed indexing with a bare OverflowError from numpy."""
    import io
    import tarfile

    from PIL import Image

    from kizuna.data.sources import build_index
    from kizuna.data.tar_index import parse_label

    assert parse_label("18446744073709551616") == parse_label(str(2**31)) == -2 and parse_label(str(2**31 - 1)) > 0
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for key, label in (("a", "3"), ("b", "18446744073709551616")):
            for ext, data in (("png", png.getvalue()), ("cls", label.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    index = build_index(str(tmp_path / "s.tar"), require="label")
    assert list(index.labels) == [3] and index.skips == {"bad_label": 1}


def test_probe_accuracies_are_exact_fractions_of_their_scenes():
    """The shapes-world probes' accuracies were float32 means: 0.14499999582767487 for 29 of 200 in metrics.jsonl."""
    import torch

    from kizuna.data.synthetic import evaluate_probes, make_probes

    probes = make_probes(seed=0, image_size=16, n_per_task=200, tasks=["shape"])
    gen = torch.Generator().manual_seed(0)
    results = evaluate_probes(probes, lambda ims: torch.randn(len(ims), 8, generator=gen),
                              lambda texts: torch.randn(len(texts), 8, generator=gen))
    right = round(results["shape"] * 200)
    assert results["shape"] == right / 200
