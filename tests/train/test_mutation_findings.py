"""Numbers the schedule, the weight decay, the time budget, the sampler and the training transform give, checked
against values written out by hand (a mutation hunt found each of these unchecked: the tests compared the
functions with themselves)."""
from __future__ import annotations

import math
import random
from array import array
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.data.sampler import EpochSampler
from kizuna.data.transforms import TrainTransform, center_crop, preprocess_from_config
from kizuna.train.budget import SKIP_FIRST, TimeBudget
from kizuna.train.optim import cosine_lr, make_optimizer, make_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from _clock import _steps  # noqa: E402


# ----------------------------------------------------------------------------- the learning-rate schedule
@pytest.mark.parametrize("step, total, warmup, min_ratio, expected", [
    (0, 10, 2, 0.0, 0.5),  # linear warm-up (step + 1) / warmup: the first step is not at 0
    (1, 10, 2, 0.0, 1.0),
    (2, 10, 2, 0.0, 1.0),  # the first step after the warm-up: the cosine's start, the peak (not 3/2)
    (6, 10, 2, 0.0, 0.5),  # half-way through the cosine after the warm-up: (6 - 2) / (10 - 2)
    (4, 10, 2, 0.0, 0.5 * (1 + math.cos(math.pi * 0.25))),
    (10, 10, 2, 0.0, 0.0),
    (25, 10, 2, 0.0, 0.0),  # past the end: stays at the end
    (0, 10, 0, 0.0, 1.0),  # no warm-up
    (5, 10, 0, 0.1, 0.55),  # --min-lr-ratio 0.1: 0.1 + 0.9 * 0.5
    (10, 10, 0, 0.1, 0.1),  # ends at the floor, not at 0
])
def test_cosine_lr_hand_computed_values(step, total, warmup, min_ratio, expected):
    assert cosine_lr(step, total, warmup, min_ratio) == pytest.approx(expected, abs=1e-12)


def test_the_scheduler_sets_the_hand_computed_rates():
    """(Its first run in a process imports torch._dynamo for the optimizer and scheduler: about a second.)"""
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = make_scheduler(opt, 10, 2, 0.1)
    rates = []
    for _ in range(11):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1, 0.2] + [0.2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 8))) for k in range(9)]
    assert rates == pytest.approx(expected, abs=1e-12)
    assert rates[-1] == pytest.approx(0.02)


# ----------------------------------------------------------------------------- weight decay
def test_no_weight_decay_names_stay_out_of_the_decayed_group():
    model = kizuna.create_model("ViT-mu-8")
    skip = {"visual.pos_embed", "visual.cls_token", "text.pos_embed"}
    params = dict(model.named_parameters())
    assert skip <= set(params) and all(params[n].ndim >= 2 for n in skip)  # matrices, which would be decayed
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.1)
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == 0.1
    decayed_ids = {id(p) for p in decayed[0]["params"]}
    by_id = {id(p): n for n, p in params.items()}
    assert not {by_id[i] for i in decayed_ids} & set(model.no_weight_decay())
    expected = {n for n, p in params.items() if p.ndim >= 2 and n not in skip and p.requires_grad}
    assert {by_id[i] for i in decayed_ids} == expected


# ----------------------------------------------------------------------------- the time budget


def test_stalls_that_recur_are_the_pace_not_left_out(clock):
    """3 stalls of 8x among 300 steps (loader workers refilling at each epoch's start): the slowest 1% used to be
    left out, and with them every such stall, so runs overran by the time the stalls took."""
    b = TimeBudget(budget_minutes=10.0, calibrate_steps=20)
    b.restart()
    b.step_done()
    timed = [0.1] * 100 + [0.8] + [0.1] * 100 + [0.8] + [0.1] * 97 + [0.8]
    assert len(timed) == 300
    _steps(b, clock, [1.0] * SKIP_FIRST + timed)
    assert b.seconds_per_step() == pytest.approx(0.107)  # all 300; the 297 fastest: 0.1
    b.step_times = b.step_times[:SKIP_FIRST] + array("d", [0.1] * 299 + [20.0])  # one stall among them: not the pace
    assert b.seconds_per_step() == pytest.approx(0.1)
    b.step_times = b.step_times[:SKIP_FIRST] + array("d", [0.1] * 298 + [20.0, 30.0])  # two: the pace
    assert b.seconds_per_step() == pytest.approx((298 * 0.1 + 50.0) / 300)


def test_a_correction_prices_evaluations_at_the_median_of_the_last_five(clock, monkeypatch):
    from kizuna.train import budget as budget_mod

    monkeypatch.setattr(budget_mod, "REPLAN_AT", (0.1, 0.25, 0.4))  # the mechanism, on the first three shares
    b = TimeBudget(budget_minutes=1.0, margin=0.0, calibrate_steps=5)
    b.restart()
    b.step_done()
    _steps(b, clock, [0.5] * (SKIP_FIRST + 5))  # 4 s spent at step 8
    plan = b.plan(step=8, eval_seconds=2.0, eval_every=10)
    # 60 - 4 - 2 s left, at 0.5 s a step and 2 s every 10 steps: floor(54 / 0.7) = 77 more
    assert plan["total_steps"] == 8 + 77
    assert b.replan_steps == [8 + round(0.1 * 77), 8 + round(0.25 * 77), 8 + round(0.4 * 77)]
    for seconds in (2.0, 2.0, 2.0, 2.0, 20.0):  # one slow evaluation
        b.evaluation_took(seconds)
    _steps(b, clock, [0.5] * 8)  # to step 16, 8 s spent
    fixed = b.replan(16)
    assert fixed["eval_seconds"] == 2.0  # the median; the mean would be 5.6
    assert fixed["total_steps"] == 16 + math.floor((60 - 8 - 2.0) / (0.5 + 2.0 / 10))


# ----------------------------------------------------------------------------- the sampler
def _ids(batch):
    return [key[0] for key in batch]


def test_an_exact_multiple_without_drop_last_has_no_empty_last_batch():
    s = EpochSampler(8, 4, shuffle=False, drop_last=False)
    assert len(s) == 2
    assert [_ids(b) for b in s] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    ranks = [EpochSampler(16, 4, rank=r, world_size=2, shuffle=False, drop_last=False) for r in range(2)]
    assert [len(r) for r in ranks] == [2, 2]
    assert [[_ids(b) for b in r] for r in ranks] == [[[0, 1, 2, 3], [8, 9, 10, 11]],
                                                      [[4, 5, 6, 7], [12, 13, 14, 15]]]


def test_the_tail_is_dealt_over_the_ranks_one_by_one():
    """drop_last=False: the tail is tail[r::W] (a rank's share differs from another's by one at most)."""
    ranks = [EpochSampler(11, 4, rank=r, world_size=2, shuffle=False, drop_last=False) for r in range(2)]
    assert [[_ids(b) for b in r] for r in ranks] == [[[0, 1, 2, 3], [8, 10]], [[4, 5, 6, 7], [9]]]
    ranks = [EpochSampler(13, 2, rank=r, world_size=3, seed=5, drop_last=False) for r in range(3)]
    tail = ranks[0].permutation(0)[12:].tolist()
    assert [[_ids(b) for b in r][-1] for r in ranks] == [tail, [], []]
    ranks = [EpochSampler(17, 2, rank=r, world_size=3, seed=5, drop_last=False) for r in range(3)]
    tail = ranks[0].permutation(0)[12:].tolist()  # 5 left after two steps of 6
    assert [[_ids(b) for b in r][-1] for r in ranks] == [tail[0::3], tail[1::3], tail[2::3]]


# ----------------------------------------------------------------------------- the training transform
def _noise(w, h, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _pixels(x: torch.Tensor) -> np.ndarray:
    """A transform's output made with mean 0 and std 1 back to 8-bit pixels (h, w, 3)."""
    return (x.permute(1, 2, 0).numpy() * 255.0).round().astype(np.int64)


def test_the_random_resized_crop_cuts_a_window_of_the_image():
    """scale 0.25 and a square aspect on a 64x64 image: a 32x32 window at a random place, kept at its pixels
    (nearest, no scaling), never the whole image squashed to 32x32."""
    arr = _noise(64, 64)
    t = TrainTransform(image_size=32, mean=[0, 0, 0], std=[1, 1, 1], interpolation="nearest",
                       scale=(0.25, 0.25), ratio=(1.0, 1.0))
    corners = set()
    for seed in range(6):
        out = _pixels(t(Image.fromarray(arr), random.Random(seed)))
        found = [(x, y) for y in range(33) for x in range(33) if np.array_equal(out, arr[y:y + 32, x:x + 32])]
        assert len(found) == 1, "not a 32x32 window of the image"
        corners.add(found[0])
    assert len(corners) > 1  # at random places


def test_the_fallback_crop_keeps_an_aspect_within_the_ratio():
    """torchvision's fallback after 10 failed draws: the largest centre crop of an aspect within ``ratio``."""
    t = TrainTransform(scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3))
    # 10 x 100: every draw is wider than 10 pixels; the fallback is 10 x round(10 / 0.75) = 13, centred
    assert t.crop_box(10, 100, random.Random(0)) == (0, (100 - 13) // 2, 10, (100 - 13) // 2 + 13)
    assert t.crop_box(100, 10, random.Random(0)) == ((100 - 13) // 2, 0, (100 - 13) // 2 + 13, 10)


def test_colour_jitter_darkens_as_well_as_brightens():
    grey = Image.new("RGB", (16, 16), (128, 128, 128))  # contrast and saturation leave a flat grey as it is
    t = TrainTransform(image_size=16, mean=[0, 0, 0], std=[1, 1, 1], scale=(1.0, 1.0), ratio=(1.0, 1.0),
                       color_jitter=0.4)
    levels = [_pixels(t(grey, random.Random(seed))).mean() for seed in range(20)]
    assert min(levels) < 128 - 5 and max(levels) > 128 + 5
    assert all(128 * 0.6 - 1 <= v <= 128 * 1.4 + 1 for v in levels)


@pytest.mark.parametrize("interpolation, pil", [("nearest", Image.NEAREST), ("bilinear", Image.BILINEAR)])
def test_the_training_transform_follows_the_configs_interpolation(interpolation, pil):
    arr = _noise(40, 40, seed=3)
    cfg = {"image_size": 24, "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": interpolation}
    t = preprocess_from_config(cfg, train=True, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert t.interpolation == interpolation
    out = _pixels(t(Image.fromarray(arr), random.Random(0)))
    expected = np.asarray(Image.fromarray(arr).resize((24, 24), pil), dtype=np.int64)  # the whole image
    assert np.array_equal(out, expected)


def test_center_crop_rounds_the_offset_as_torchvision():
    """35 -> 32: torchvision's offset int(round((35 - 32) / 2.0)) = 2 (docs/INTEROP.md), not the floor 1."""
    arr = _noise(35, 35, seed=1)
    out = np.asarray(center_crop(Image.fromarray(arr), 32))
    assert np.array_equal(out, arr[2:34, 2:34])
    arr = _noise(39, 33, seed=2)  # width margin 7 -> 4 (round 3.5 up), height margin 1 -> 0 (round 0.5 to even)
    out = np.asarray(center_crop(Image.fromarray(arr), 32))
    assert np.array_equal(out, arr[0:32, 4:36])
