"""The code paths that only run with more than one process (per-rank seeds and batches, rank-0-only writes, the
resume's per-rank state, the sharded evaluation's gathers, the supervised evaluation's sums), checked in this one
process: a fifth mutation hunt found each of these unchecked by the 2-rank torchrun tests (whose ranks are alike,
or whose reference ran the same mutated code). Where a collective is met, a stand-in for ``torch.distributed``
plays the other rank: what it contributes is given, what this rank sends is recorded. Where a trainer is built,
it is told it is rank r of 2 (``init_distributed`` and DDP replaced) without a process group, so its collectives
are those of one process."""
from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _fake_dist import FakeRankGroup  # noqa: E402
from _tiny import tiny_config  # noqa: E402

from kizuna.data.sources import SkipCounter  # noqa: E402
from kizuna.eval import encode  # noqa: E402
from kizuna.train import distributed, supervised  # noqa: E402
from kizuna.train import trainer as trainer_module  # noqa: E402
from kizuna.train.contrastive import ContrastiveTrainer, model_config  # noqa: E402
from kizuna.train.distributed import DistInfo  # noqa: E402
from kizuna.train.trainer import Trainer, rank_seed  # noqa: E402


@pytest.fixture(autouse=True)
def _threads_as_they_were():
    """A trainer built and never trained keeps its --threads 1 setting: the caller's count back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- a stand-in for torch.distributed
class FakeGather(FakeRankGroup):
    """Rank ``rank`` of ``world``: ``tensors`` and ``objects`` are, per all_gather / all_gather_object call in order,
    the other ranks' contributions (a list in rank order, this rank's left out); ``sent`` records this rank's."""

    def __init__(self, rank: int, world: int, tensors=(), objects=()):
        super().__init__(rank, world)
        self.tensors, self.objects = list(tensors), list(objects)
        self.sent: list = []

    def get_backend(self):
        return "gloo"

    def _fill(self, out, own, others):
        others = list(others)
        assert len(others) == self.world - 1
        others.insert(self.rank, own)
        for r, value in enumerate(others):
            out[r] = value

    def all_gather(self, out, x):
        self.sent.append(x.clone())
        others = [torch.as_tensor(o, dtype=x.dtype) for o in self.tensors.pop(0)]
        for o in others:
            assert o.shape == x.shape, (o.shape, x.shape)  # gloo refuses unequal shapes
        filled = [None] * self.world
        self._fill(filled, x, others)
        for slot, value in zip(out, filled):
            slot.copy_(value)

    def all_gather_object(self, out, obj):
        self.sent.append(obj)
        self._fill(out, obj, self.objects.pop(0))


def _fake_gather(monkeypatch, **kw) -> FakeGather:
    fake = FakeGather(**kw)
    monkeypatch.setattr(encode, "dist", fake)
    monkeypatch.setattr(distributed, "dist", fake)
    return fake


class CharTokenizer:
    """A text's tokens: (its length, its first character's code, 1); a text starting with "!" is refused."""

    def __call__(self, texts):
        if any(t.startswith("!") for t in texts):
            raise ValueError("refused")
        return torch.tensor([[len(t), ord(t[0]), 1.0] for t in texts])


def _expected_text_feature(text: str) -> torch.Tensor:
    return F.normalize(torch.tensor([float(len(text)), float(ord(text[0])), 1.0]), dim=0)


# ----------------------------------------------------------------------------- sharded evaluation
def test_sharded_text_features_land_in_their_global_rows_and_skips_name_the_global_text(monkeypatch):
    """Rank 1 of 2 encodes positions 2..5 of the texts sorted by length (bounds [(0, 2), (2, 6)] at batch 2: texts
    2, 1, 3, 4) and refuses text 3; rank 0 gives positions 0-1 (texts 5 and 0) and one refusal of its own. Mutants:
    the skip's example named by the shard's position ("text 1": the tokenizer's offset ``i - start``), the skips not
    summed over the ranks, and the gathered valid mask left as uint8 (a byte mask indexes rows 0 and 1 instead of
    selecting)."""
    texts = ["ab", "cde", "fg", "!bad", "hijk", "l"]
    rank0_rows = torch.zeros(4, 3)
    rank0_rows[0], rank0_rows[1] = _expected_text_feature("l"), _expected_text_feature("ab")
    fake = _fake_gather(monkeypatch, rank=1, world=2,
                        tensors=[[rank0_rows], [torch.tensor([1, 1, 0, 0], dtype=torch.uint8)]],
                        objects=[[3], [({"bad_caption": 1}, {"bad_caption": ["text 0 ('zz')"]})]])
    out = encode.encode_texts_sharded(torch.nn.Module(), CharTokenizer(), texts, batch_size=2,
                                      encode_fn=lambda tokens: tokens.float())
    assert out.valid.dtype == torch.bool and out.valid.tolist() == [True, True, True, False, True, True]
    for row, text in enumerate(texts):
        expected = torch.zeros(3) if text.startswith("!") else _expected_text_feature(text)
        torch.testing.assert_close(out.features[row], expected)
    assert out.skips.counts == {"bad_caption": 2}
    assert out.skips.examples["bad_caption"] == ["text 0 ('zz')", "text 3 ('!bad')"]
    # what this rank sent: its 4 rows (texts 2, 1, 3, 4: the third zero) and its own refusal, named by the global
    # index
    torch.testing.assert_close(fake.sent[1][2], torch.zeros(3))
    torch.testing.assert_close(fake.sent[1][1], _expected_text_feature("cde"))
    assert fake.sent[3] == ({"bad_caption": 1}, {"bad_caption": ["text 3 ('!bad')"]})


def test_a_rank_with_an_empty_text_shard_takes_the_feature_width_of_the_others(monkeypatch):
    """2 texts at batch 4 on 2 ranks: rank 0's shard is empty (bounds [(0, 0), (0, 2)]). Its zero rows must have
    the width the other rank found. Mutant: ``min`` of the ranks' widths (-1: a [0, 0] tensor that cannot be
    gathered with the other rank's [2, 3])."""
    texts = ["ab", "cde"]
    rank1 = torch.stack([_expected_text_feature(t) for t in texts])
    _fake_gather(monkeypatch, rank=0, world=2, tensors=[[rank1], [torch.ones(2, dtype=torch.uint8)]],
                 objects=[[3], [({}, {})]])
    out = encode.encode_texts_sharded(torch.nn.Module(), CharTokenizer(), texts, batch_size=4,
                                      encode_fn=lambda tokens: tokens.float())
    torch.testing.assert_close(out.features, rank1)
    assert out.valid.tolist() == [True, True] and out.skips.total == 0


def test_a_rank_with_an_empty_image_shard_takes_the_feature_width_of_the_others(monkeypatch, tmp_path):
    """encode_images, 2 images at batch 4 on 2 ranks, as rank 0 (whose shard is empty): the features are rank 1's
    rows with their width, and rank 1's skips are counted here too. Mutants: ``min`` of the widths, and the
    skips left unsummed."""
    sys.path.insert(0, str(HERE.parent / "eval"))
    from _evalhelpers import image_folder

    from kizuna.eval.datasets import load_dataset

    ds = load_dataset(image_folder(tmp_path / "imgs", per_class=1), task="classification")
    assert len(ds) == 2
    rank1 = F.normalize(torch.tensor([[1.0, 2.0, 2.0, 0.0, 0.0], [0.0, 3.0, 4.0, 0.0, 0.0]]), dim=-1)
    _fake_gather(monkeypatch, rank=0, world=2, tensors=[[rank1], [torch.ones(2, dtype=torch.uint8)]],
                 objects=[[5], [({"corrupt_image": 2}, {"corrupt_image": ["x.png"]})]])
    out = encode.encode_images(torch.nn.Module(), ds, transform=lambda img: torch.zeros(3, 4, 4), batch_size=4,
                               progress=False, encode_fn=lambda x: pytest.fail("rank 0 has no images to encode"))
    torch.testing.assert_close(out.features, rank1)
    assert out.valid.dtype == torch.bool and out.valid.tolist() == [True, True]
    assert out.skips.counts == {"corrupt_image": 2}


# ----------------------------------------------------------------------------- the supervised evaluation
def test_the_supervised_evaluation_counts_every_ranks_skipped_validation_images(monkeypatch, capsys):
    """SupervisedTrainer.evaluate as rank 0 of 2, the ranks' sums played by stand-ins for its all_reduce_sum and
    summed_skips: rank 1 read 3 images (1 right) and could not read 2. Mutant: the skips not summed (rank 0's 1
    alone reported as val_skipped)."""
    other = torch.tensor([1.0, 3.0, 3.0, 0.0], dtype=torch.float64)  # correct, count, loss sum, non-finite
    monkeypatch.setattr(supervised, "all_reduce_sum", lambda x: x.add_(other))
    monkeypatch.setattr(supervised, "summed_skips",
                        lambda s: SkipCounter({**s.counts, "corrupt_image": s["corrupt_image"] + 2}))
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    batch = {"images": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "labels": torch.tensor([0, 0]),
             "skipped": {"corrupt_image": 1}, "skip_examples": {"corrupt_image": ["a.jpg"]}}
    ns = types.SimpleNamespace(val_loader=[batch], model=model, device=torch.device("cpu"),
                               val_sampler=types.SimpleNamespace(set_epoch=lambda e: None),
                               dist=DistInfo(rank=0, world_size=2), cfg=types.SimpleNamespace(progress=False),
                               autocast=contextlib.nullcontext, _said_val_skips=False)
    metrics = supervised.SupervisedTrainer.evaluate(ns)
    ce = F.cross_entropy(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]), reduction="sum").item()
    assert metrics["val_samples"] == 5 and metrics["val_top1"] == pytest.approx(2 / 5)
    assert metrics["val_loss"] == pytest.approx((ce + 3.0) / 5)
    assert metrics["val_skipped"] == 3
    assert "corrupt_image" in capsys.readouterr().err


def test_mixup_draws_differ_between_ranks_at_one_step(monkeypatch):
    """Each rank's Mixup / CutMix generator is seeded by (seed, step, rank). Mutant: the rank left out, so every
    rank mixed its batch with the same permutation and lambda. The generators are caught at mix_batch."""
    draws = []

    def mix(images, targets, rng, *args):
        draws.append(rng.random(4).tolist())
        return images, targets, None

    monkeypatch.setattr(supervised, "mix_batch", mix)
    model = torch.nn.Linear(2, 2)

    def trainer(rank: int, step: int):
        return types.SimpleNamespace(
            cfg=types.SimpleNamespace(seed=3, label_smoothing=0.0, mixup=0.8, cutmix=0.0, mix_prob=1.0),
            device=torch.device("cpu"), num_classes=2, step=step, dist=DistInfo(rank=rank, world_size=2),
            autocast=contextlib.nullcontext, forward_model=model, apply_gradients=lambda: None)

    for rank, step in ((0, 5), (1, 5), (0, 6), (0, 5)):
        supervised.SupervisedTrainer.train_step(trainer(rank, step), torch.randn(2, 2), torch.tensor([0, 1]))
    assert draws[0] == draws[3]  # the same rank and step: the same draws
    assert draws[0] != draws[1] and draws[0] != draws[2]


# ----------------------------------------------------------------------------- the batch split's checks
def test_the_global_batch_must_split_over_ranks_and_micro_batches():
    """Mutants: ContrastiveTrainer.check_config dividing by accum_steps alone, and Trainer.check_config (the ViT
    trainer's) checking nothing: 6 on 2 ranks x 2 micro-batches, or 7 on 2 ranks, ran with uneven shares."""
    two_ranks = types.SimpleNamespace(dist=DistInfo(rank=0, world_size=2))
    with pytest.raises(ValueError, match=r"batch_size 6 must be divisible by world_size x accum_steps \(2 x 2\)"):
        ContrastiveTrainer.check_config(two_ranks, types.SimpleNamespace(batch_size=6, accum_steps=2))
    # (data and synthetic_hard_negatives: the hard-negative pairs' rule, session 50, reads them)
    ContrastiveTrainer.check_config(two_ranks, types.SimpleNamespace(batch_size=8, accum_steps=2, data="synthetic",
                                                                     synthetic_hard_negatives=False))
    with pytest.raises(ValueError, match=r"batch_size 7 must be divisible by world_size 2"):
        Trainer.check_config(two_ranks, types.SimpleNamespace(batch_size=7))
    Trainer.check_config(two_ranks, types.SimpleNamespace(batch_size=8))


def test_rank_seeds_differ_between_ranks_and_resume_steps():
    """Mutant: the rank left out of rank_seed's SeedSequence (ranks 1, 2, 3 drew the same patch-dropout masks; the
    2-rank test, whose rank 0 keeps --seed, cannot tell)."""
    seeds = [rank_seed(7, r) for r in (1, 2, 3)]
    assert len(set(seeds)) == 3
    assert rank_seed(7, 1) == rank_seed(7, 1) and rank_seed(7, 1, 4) != rank_seed(7, 1) != rank_seed(8, 1)
    assert all(0 <= s < 2**63 for s in seeds)


# ----------------------------------------------------------------------------- a trainer told it is rank r of 2
def _as_rank(monkeypatch, rank: int) -> None:
    monkeypatch.setattr(trainer_module, "init_distributed", lambda device=None: DistInfo(rank=rank, world_size=2))
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, device_ids=None: model)


def _rng_after_seed(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.get_rng_state()


def test_rank_1_trains_its_share_of_the_batch_on_its_own_stream_and_writes_nothing(monkeypatch, tmp_path):
    """Rank 1 of 2, global batch 8: its loader gives 4 samples a step, its torch stream is seeded by
    rank_seed(seed, 1) once the model is built, and a whole run (with checkpoints) leaves OUT, which is rank 0's,
    as it was (an earlier run's checkpoints and log in place: setting them aside is rank 0's too). Mutants: the
    per-rank batch the global one, the reseeding done on rank 0 instead of the others,
    rank 1 writing the log, train_config.json, checkpoints or curves, or moving the earlier run aside, or running
    the synthetic probes."""
    _as_rank(monkeypatch, 1)
    out = tmp_path / "run"
    (out / "checkpoints" / "step_0000009").mkdir(parents=True)  # an earlier run's, which rank 0 sets aside
    (out / "checkpoints" / "step_0000009" / "train_state.pt").write_bytes(b"earlier")
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 9}\n')
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    from kizuna.train import report

    drawn = []
    monkeypatch.setattr(report, "plot_curves", lambda folder: drawn.append(folder))
    trainer = ContrastiveTrainer(tiny_config(out, batch_size=8, steps=2, warmup_steps=1, save_every=1, device="cpu"))
    # (the run's stream, kept for train(): the caller's is its own once the trainer is built)
    assert torch.equal(trainer._run_rng["torch"], _rng_after_seed(rank_seed(trainer.cfg.seed, 1)))
    assert trainer.per_rank_batch == 4 and len(next(iter(trainer.loader))["captions"]) == 4
    metrics = trainer.train()
    assert trainer.step == 2
    assert metrics == {}  # the synthetic probes are rank 0's (200 images a task, for nothing, on every other rank)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert drawn == []  # OUT/curves.png is rank 0's to draw


def test_rank_0_keeps_the_one_process_stream_and_rank_1_resumes_an_old_checkpoint_on_a_stream_of_its_step(
        monkeypatch, tmp_path):
    """Rank 0 of 2 is not reseeded: its stream goes on from the model's initialisation under --seed. A checkpoint
    holding one rank's RNG state only (an older kizuna's) is resumed on rank 1 with the stream of
    rank_seed(seed, 1, step): the mutant without the step drew the masks of step 0 again."""
    _as_rank(monkeypatch, 0)
    cfg = tiny_config(tmp_path / "run", batch_size=8, steps=2, warmup_steps=1, device="cpu")
    first = ContrastiveTrainer(cfg)
    after = first._run_rng["torch"]
    torch.manual_seed(cfg.seed)
    from kizuna.models.clip import ClipModel

    ClipModel(model_config(cfg))  # the model's initialisation, as the trainer made it
    assert torch.equal(after, torch.get_rng_state())
    first.train()
    state_file = tmp_path / "run" / "checkpoints" / "step_0000002" / "train_state.pt"
    state = torch.load(state_file, weights_only=False)
    state.pop("rng_ranks", None)  # as an older kizuna saved it
    torch.save(state, state_file)
    _as_rank(monkeypatch, 1)
    resumed = ContrastiveTrainer(tiny_config(tmp_path / "run", batch_size=8, steps=3, warmup_steps=1,
                                             eval_max_samples=0, device="cpu", resume="latest"))
    assert resumed.step == 2
    assert torch.equal(resumed._run_rng["torch"], _rng_after_seed(rank_seed(cfg.seed, 1, 2)))


def test_only_rank_0_exports_the_supervised_model(tmp_path):
    """SupervisedTrainer.export: OUT/model is rank 0's to write (both ranks wrote it at once). Mutant: the
    is_main test dropped."""
    import kizuna
    from kizuna.models.checkpoint import load_model

    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=3, width=32, depth=1, heads=2, mlp_dim=64)

    def as_rank(rank: int, out: Path):
        return types.SimpleNamespace(out=out, dist=DistInfo(rank=rank, world_size=2), model=vit, step=4,
                                     ckpt=types.SimpleNamespace(model_extra={}))

    path = supervised.SupervisedTrainer.export(as_rank(1, tmp_path / "r1"), {"val_top1": 0.5})
    assert path == tmp_path / "r1" / "model" and not (tmp_path / "r1").exists()
    path = supervised.SupervisedTrainer.export(as_rank(0, tmp_path / "r0"), {"val_top1": 0.5})
    loaded = load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vit.state_dict().values()))


# ----------------------------------------------------------------------------- the gathers
def test_gather_shards_refuses_a_rank_holding_other_rows_than_its_bounds(monkeypatch):
    """A rank whose rows are not its shard's would put them in another rank's rows. Mutant: the check dropped
    (3 rows gathered as 2: the third lost without a word)."""
    fake = _fake_gather(monkeypatch, rank=0, world=2, tensors=[[torch.ones(3, 2)]])
    with pytest.raises(ValueError, match=r"^rank 0 has 3 rows, expected 2$"):
        encode.gather_shards(torch.zeros(3, 2), [(0, 2), (2, 5)])
    assert fake.sent == []  # refused before its collective


def test_the_gathered_clip_loss_of_two_ranks_is_the_one_process_loss_of_the_whole_batch(monkeypatch):
    """Two simulated ranks, each scoring its 3 rows against the gathered 6 columns (the gather played by a stand-in
    that hands back the whole batch, with gradient, as the all_gather's backward sums it): the mean of their
    losses and the gradients are those of the CLIP paper's loss, worked out here by hand over the whole batch."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(6, 4, generator=g), dim=-1).requires_grad_(True)
    txt = F.normalize(torch.randn(6, 4, generator=g), dim=-1).requires_grad_(True)
    scale = torch.tensor(5.0)
    # reference: logits s * I T^T; the mean over images of -log softmax over texts of the diagonal, and the same
    # over texts; halved
    logits = scale * img.detach() @ txt.detach().T
    ref = -(torch.diagonal(logits.log_softmax(1)).mean() + torch.diagonal(logits.log_softmax(0)).mean()) / 2
    ref_i, ref_t = torch.autograd.functional.jacobian(
        lambda i, t: -(torch.diagonal((scale * i @ t.T).log_softmax(1)).mean()
                       + torch.diagonal((scale * i @ t.T).log_softmax(0)).mean()) / 2, (img.detach(), txt.detach()))
    total = 0
    for rank in (0, 1):
        _fake_gather(monkeypatch, rank=rank, world=2)
        local_i, local_t = img[3 * rank:3 * rank + 3], txt[3 * rank:3 * rank + 3]
        gathered = iter((img, txt))
        monkeypatch.setattr(distributed, "gather_with_grad", lambda x: next(gathered))
        total = total + distributed.contrastive_loss("clip", local_i, local_t, scale)
    (total / 2).backward()
    assert (total / 2).item() == pytest.approx(ref.item(), abs=1e-6)
    # DDP averages the ranks' gradients: the mean loss's gradient
    torch.testing.assert_close(img.grad, ref_i, atol=1e-6, rtol=0)
    torch.testing.assert_close(txt.grad, ref_t, atol=1e-6, rtol=0)


def test_the_ring_siglip_loss_of_three_ranks_is_the_one_process_loss_of_the_whole_batch(monkeypatch):
    """Three simulated ranks of 2 pairs: each scores its images against its own texts, then against the text chunks
    the ring hands it (rank r - 1's, then r - 2's). The ranks' mean loss is SigLIP's over the 6 x 6 matrix divided by
    the local batch; the ranks' mean is the one-process loss of the whole batch (Zhai et al.), worked out here by
    hand: every pair is negative but the diagonal."""
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    txt = F.normalize(torch.randn(6, 4, generator=g), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    z = 2 * torch.eye(6) - 1
    ref = -F.logsigmoid(z * (scale * img @ txt.T + bias)).sum() / 6  # one process, the whole batch of 6
    chunks = txt.split(2)
    total = 0.0
    for rank in range(3):
        _fake_gather(monkeypatch, rank=rank, world=3)
        calls = iter(range(1, 3))
        monkeypatch.setattr(distributed, "neighbour_exchange", lambda x: chunks[(rank - next(calls)) % 3])
        total += distributed.contrastive_loss("siglip", img.split(2)[rank], chunks[rank], scale, bias).item()
    assert total / 3 == pytest.approx(ref.item(), rel=1e-6)  # the ranks' mean (each divides by its own 2 pairs)


def test_a_failed_evaluation_under_torchrun_raises_without_a_checkpoint(monkeypatch, tmp_path):
    """One process saves the finished step before an evaluation's error goes on; under torchrun (rank 0 of 2 here)
    the save's gathers and barrier would meet the other ranks' evaluation collectives, so it raises at once.
    Mutant: the save made under torchrun too."""
    _as_rank(monkeypatch, 0)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", batch_size=8, steps=1, warmup_steps=0, device="cpu"))
    monkeypatch.setattr(trainer, "evaluate", lambda: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer.train()
    assert trainer.step == 1 and not list((tmp_path / "run").glob("checkpoints/step_*"))


def test_only_rank_0_reports_and_logs_an_epochs_skipped_samples(monkeypatch):
    """The epoch's skips are summed over the ranks on every rank; rank 0 alone says them and logs them. Mutant: the
    is_main test dropped (each rank printed the report: one line per rank)."""
    summed = SkipCounter({"corrupt_image": 5}, {"corrupt_image": ["a.jpg"]})
    monkeypatch.setattr(trainer_module, "summed_skips", lambda skips: summed)
    for rank in (1, 0):
        written, logged = [], []
        ns = types.SimpleNamespace(loader=types.SimpleNamespace(skips=SkipCounter()), epoch=3,
                                   dist=DistInfo(rank=rank, world_size=2),
                                   log_skips=lambda skips, **kw: logged.append(skips.total))
        report = Trainer._report_epoch_skips(ns, types.SimpleNamespace(write=written.append))
        assert report == summed.report()
        assert (written, logged) == (([], []) if rank else ([f"epoch 3: {summed.report()}"], [5]))


def test_only_rank_0_updates_best_between_checkpoints(monkeypatch, tmp_path):
    """An evaluation between checkpoints may still be the best: rank 0 alone updates best/ (every rank has the
    gathered evaluation's metrics, and two ranks replacing one folder at once collide). Mutant: the is_main test
    dropped. As rank 1 of 2, evaluating every step and saving none."""
    _as_rank(monkeypatch, 1)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", batch_size=8, steps=2, warmup_steps=1, eval_every=1,
                                             save_every=0, device="cpu"))
    monkeypatch.setattr(trainer, "evaluate", lambda: {"probe/colour": 0.5})
    best = []
    monkeypatch.setattr(trainer.ckpt, "update_best", lambda *args: best.append(args[0]))
    assert trainer.train() == {"probe/colour": 0.5}
    assert best == []


def test_a_ctrl_c_under_torchrun_interrupts_at_once_instead_of_stopping_one_rank_after_its_step(monkeypatch, tmp_path):
    """Under torchrun the ranks would stop at different steps and wait for one another, so the signals interrupt
    as before: no stop-after-the-step and no checkpoint of it (here rank 0 of 2). Mutant: the stop handler
    installed under torchrun too."""
    import signal

    _as_rank(monkeypatch, 0)
    trainer = ContrastiveTrainer(tiny_config(tmp_path / "run", batch_size=8, steps=4, warmup_steps=1, device="cpu"))
    fit, calls = trainer.fit_batch, []

    def fit_and_interrupt(batch):
        numbers = fit(batch)
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return numbers

    trainer.fit_batch = fit_and_interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.step == 1 and not list((tmp_path / "run").glob("checkpoints/step_*"))


def test_supervised_ranks_evaluate_and_augment_their_own_shares(monkeypatch, tmp_path):
    """SupervisedTrainer as rank 0 and rank 1 of 2 (6 validation images, --eval-batch-size 4 for all ranks): the
    ranks' validation batches hold 2 images at most and together each image once, and rank 1's device-augmented
    batches are drawn with its own rank's generator. Mutants: every rank's validation sampler rank 0's (rank 0's
    images scored twice, rank 1's never), the per-rank evaluation batch the global one, and the batch
    augmentation seeded with rank 0 on every rank (the same crops and flips at every batch position)."""
    from test_supervised import CLASSES, TINY, _shard

    from kizuna.data.batch_augment import TensorBatches
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    _shard(tmp_path / "data" / "train" / "000000.tar", 0, 8)
    _shard(tmp_path / "data" / "val" / "000000.tar", 100, 6)
    (tmp_path / "data" / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    seen = []
    for rank in (0, 1):
        _as_rank(monkeypatch, rank)
        cfg = make_supervised_config(
            model="mu/4", model_overrides=TINY, image_size=16, data=str(tmp_path / "data" / "train"),
            val_data=str(tmp_path / "data" / "val"), batch_size=4, eval_batch_size=4, workers=0, crop="pad",
            augment_on="device", out=str(tmp_path / f"r{rank}"), progress=False, device="cpu", steps=1, threads=1,
            precision="fp32")
        trainer = SupervisedTrainer(cfg)
        trainer.val_sampler.set_epoch(0)
        batches = [[i for i, _ in batch] for batch in trainer.val_sampler]
        assert all(len(b) <= 2 for b in batches), batches
        seen += [i for b in batches for i in b]
        assert len([lab for b in trainer.val_loader for lab in b["labels"].tolist()]) == sum(map(len, batches))
    assert sorted(seen) == list(range(6))
    # rank 1's first augmented batch: its own generator's draws, not rank 0's
    loader = trainer.loader
    own = TensorBatches(loader.decoded, trainer.sampler, trainer.batch_augment, seed=cfg.seed, rank=1)
    rank0 = TensorBatches(loader.decoded, trainer.sampler, trainer.batch_augment, seed=cfg.seed, rank=0)
    first = next(iter(loader))["images"]
    assert torch.equal(first, next(iter(own))["images"]) and not torch.equal(first, next(iter(rank0))["images"])
