"""Deterministic, statistical checks of the data pipeline's documented randomness and constants.

Each test holds a behaviour the module docstrings state (RandAugment's table and probabilities, the
pad-and-crop offsets 0..2p, the device path agreeing with the PIL one, PairDataset's seeding, EXIF
orientation as PIL's exif_transpose, OpenAI CLIP's basic_clean) against an independent reference.
"""
from __future__ import annotations

import html
import io
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _shards import pair_members, write_tar  # noqa: E402

from kizuna.data import augment  # noqa: E402
from kizuna.data.augment import (  # noqa: E402
    OPS,
    ClassificationTrainTransform,
    RandAugment,
    apply_op,
    posterize_bits,
    strength,
)
from kizuna.data.batch_augment import BatchAugment, DecodedImages, TensorBatches  # noqa: E402
from kizuna.data.images import upright  # noqa: E402
from kizuna.data.sampler import EpochSampler  # noqa: E402
from kizuna.data.sources import PairDataset, SkipCounter, build_index  # noqa: E402
from kizuna.data.tokenizer import ClipTokenizer, clean_text, train_bpe_tokenizer  # noqa: E402

N = 2000


def _grey(value=100, size=(2, 2)):
    return Image.new("RGB", size, (value, value, value))


# ------------------------------------------------------------------------------ augment.py (PIL path)
def test_strength_table_of_the_docstring_at_every_magnitude():
    table = {"rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45, "translate_y": 0.45,
             "brightness": 0.9, "contrast": 0.9, "color": 0.9}
    for name, top in table.items():
        for m in range(11):
            assert strength(name, m) == pytest.approx(top * m / 10), (name, m)
        assert strength(name, 15) == pytest.approx(top)  # clamped to the 0..10 scale
        assert strength(name, -3) == 0.0


def test_posterize_bits_follow_8_minus_round_4m_over_10():
    # torchvision's mapping: 8 - round(4 * M/10), 8 at M=0 down to 4 at M=9 and M=10; clamped above 10
    assert [posterize_bits(m) for m in range(11)] == [8, 8, 7, 7, 6, 6, 6, 5, 5, 4, 4]
    assert posterize_bits(20) == 4 and posterize_bits(100) == 4


def test_rotate_at_top_magnitude_is_pils_30_degree_rotation():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    out = apply_op(img, "rotate", 10, random.Random(0))
    refs = [img.rotate(a, resample=Image.BILINEAR, fillcolor=(128, 128, 128)) for a in (30.0, -30.0)]
    assert any(np.array_equal(np.asarray(out), np.asarray(r)) for r in refs)


def test_random_sign_is_negative_about_half_the_time():
    rng = random.Random(1234)
    img = _grey(100)
    darker = sum(np.asarray(apply_op(img, "brightness", 5, rng))[0, 0, 0] < 100 for _ in range(N))
    assert 0.4 * N < darker < 0.6 * N


def test_randaugment_draws_every_op_of_the_list_uniformly(monkeypatch):
    seen = []
    for name in OPS:
        monkeypatch.setitem(augment.OPS, name, lambda img, m, rng, name=name: seen.append(name) or img)
    ra = RandAugment(num_ops=1, magnitude=9, ops=tuple(OPS))
    rng = random.Random(7)
    img = _grey()
    for _ in range(N):
        ra(img, rng)
    counts = {n: seen.count(n) for n in OPS}
    assert set(counts) == set(seen)
    expected = N / len(OPS)
    assert all(0.6 * expected < c < 1.4 * expected for c in counts.values()), counts


def test_randaugment_applies_num_ops_ops():
    # solarize at M=10 inverts every pixel: an even number of ops gives the image back, an odd one inverts
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5)
    inverted = np.asarray(ImageOps.solarize(img, 0))
    for k in (1, 2, 3, 4):
        out = np.asarray(RandAugment(num_ops=k, magnitude=10, ops=("solarize",))(img, random.Random(k)))
        assert np.array_equal(out, inverted if k % 2 else np.asarray(img)), k


def test_randaugment_op_fires_with_probability_prob():
    ra = RandAugment(num_ops=1, magnitude=10, ops=("solarize",), prob=0.3)
    rng = random.Random(5)
    img = _grey(100, (1, 1))
    fired = sum(np.asarray(ra(img, rng))[0, 0, 0] == 155 for _ in range(N))
    assert 0.25 * N < fired < 0.35 * N


def _white(size=8):
    return Image.new("RGB", (size, size), (255, 255, 255))


def _offsets(arr: np.ndarray, p: int) -> tuple[int, int]:
    """(top, left) of a crop of a white image padded with p black pixels, from where the black is."""
    rows = (arr.reshape(arr.shape[0], -1) == 0).all(1)
    cols = (arr.transpose(1, 0, 2).reshape(arr.shape[1], -1) == 0).all(1)

    def off(black):
        lead = int(np.argmin(black)) if not black.all() else len(black)
        trail = int(np.argmin(black[::-1]))
        return p - lead if lead else p + trail

    return off(rows), off(cols)


def test_pad_crop_offsets_cover_0_to_2p_uniformly():
    p = 2
    t = ClassificationTrainTransform(image_size=8, padding=p, hflip=0.0, crop="pad")
    rng = random.Random(3)
    tops, lefts = [], []
    for _ in range(1000):
        top, left = _offsets(np.asarray(t.augment(_white(), rng)), p)
        tops.append(top)
        lefts.append(left)
    for seq in (tops, lefts):
        counts = np.bincount(seq, minlength=2 * p + 1)
        assert len(counts) == 2 * p + 1 and (counts > 0.6 * 1000 / (2 * p + 1)).all(), counts


def test_hflip_happens_with_probability_hflip():
    img = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))  # 1x2: black, white
    t = ClassificationTrainTransform(image_size=(1, 2), crop="none", hflip=0.3)
    rng = random.Random(11)
    flipped = sum(np.asarray(t.augment(img, rng))[0, 0, 0] > 128 for _ in range(N))
    assert 0.25 * N < flipped < 0.35 * N


def test_train_transform_uses_its_randaug_magnitude():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for m in (0.0, 3.0):
        t = ClassificationTrainTransform(image_size=8, crop="none", hflip=0.0, randaug_ops=2, randaug_magnitude=m)
        for s in range(20):
            ref = RandAugment(2, m)(img, random.Random(s))  # no crop or flip randomness is drawn before it
            assert np.array_equal(np.asarray(t.augment(img, random.Random(s))), np.asarray(ref)), (m, s)


# ------------------------------------------------------------------------------ batch_augment.py
def _batch(value=100, n=N, h=2, w=2):
    return torch.full((n, 3, h, w), value, dtype=torch.uint8)


def test_device_sign_is_negative_about_half_the_time():
    ba = BatchAugment(crop="none", hflip=0.0, randaug_ops=1, randaug_magnitude=5, ops=("brightness",))
    out = ba.augment(_batch(), torch.Generator().manual_seed(0))
    darker = int((out[:, 0, 0, 0] < 100).sum())
    assert 0.4 * N < darker < 0.6 * N
    # the two values are the PIL path's: brightness by 1 -+ 0.45
    pil = {int(np.asarray(apply_op(_grey(100), "brightness", 5, random.Random(s)))[0, 0, 0]) for s in range(20)}
    assert set(out[:, 0, 0, 0].long().tolist()) == pil


def test_device_pad_crop_offsets_cover_0_to_2p():
    p = 2
    ba = BatchAugment(crop="pad", padding=p, hflip=0.0)
    out = ba.augment(_batch(255, 1000, 8, 8), torch.Generator().manual_seed(1))
    arr = out.permute(0, 2, 3, 1).numpy()
    offs = np.array([_offsets(a, p) for a in arr])
    for k in range(2):
        counts = np.bincount(offs[:, k], minlength=2 * p + 1)
        assert len(counts) == 2 * p + 1 and (counts > 0.6 * 1000 / (2 * p + 1)).all(), counts


def test_device_randaugment_applies_randaug_ops_ops():
    x = (torch.arange(48, dtype=torch.uint8).view(1, 3, 4, 4) * 5).repeat(4, 1, 1, 1)
    for k in (1, 2, 3):
        ba = BatchAugment(crop="none", hflip=0.0, randaug_ops=k, randaug_magnitude=10, ops=("solarize",))
        out = ba.augment(x.clone(), torch.Generator().manual_seed(k))
        want = 255.0 - x.float() if k % 2 else x.float()
        assert torch.equal(out, want), k


def test_device_normalisation_uses_each_channels_mean_and_std():
    mean, std = [0.1, 0.4, 0.7], [0.2, 0.3, 0.5]
    ba = BatchAugment(mean=mean, std=std, crop="none", hflip=0.0)
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = ba(x, torch.Generator().manual_seed(0))
    ref = x.double().numpy() / 255.0
    ref = (ref - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_tensor_batches_augment_each_rank_with_its_own_stream():
    n = 64
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    decoded = DecodedImages(images, torch.zeros(n, dtype=torch.long), np.arange(n), SkipCounter())
    ba = BatchAugment(crop="pad", padding=2, hflip=0.5)
    out = []
    for rank in (0, 1):
        sampler = EpochSampler(n, 16, shuffle=False, drop_last=False)
        out.append([b["images"] for b in TensorBatches(decoded, sampler, ba, seed=0, rank=rank)])
    # the same rows at the same (seed, epoch, position) on two ranks: the rank is part of the seed
    assert not any(torch.equal(a, b) for a, b in zip(*out))


# ------------------------------------------------------------------------------ sources.py
def test_skip_counter_counts_n_and_keeps_max_examples():
    c = SkipCounter(max_examples=3)
    for k in range(5):
        c.add("corrupt_image", f"s{k}", n=2)
    c.add("read_error", n=7)
    assert c.counts == {"corrupt_image": 10, "read_error": 7}
    assert c.examples == {"corrupt_image": ["s0", "s1", "s2"]}


def test_two_captions_are_both_sampled(tmp_path):
    write_tar(tmp_path / "s.tar", pair_members(["000000000"], [["a dog", "a brown dog"]]))
    idx = build_index(str(tmp_path / "s.tar"), require="caption")
    ds = PairDataset(idx, transform=lambda img: torch.zeros(1), seed=0)
    picks = [ds.caption_for(0, e) for e in range(200)]
    assert 60 < picks.count("a dog") < 140 and picks.count("a dog") + picks.count("a brown dog") == 200


def test_explicit_rng_transform_draws_what_a_global_random_transform_draws(tmp_path):
    # the docstring: with seed_transform, `random` is seeded from (seed, epoch, index) around the
    # transform; a needs_rng transform gets random.Random(...) of the same triple instead (augment.py:
    # "Either way ... exactly the same augmentations")
    write_tar(tmp_path / "s.tar", pair_members(["000000000", "000000001"], [["a", "b", "c"], ["d", "e"]]))
    idx = build_index(str(tmp_path / "s.tar"), require="caption")

    class Explicit:
        needs_rng = True

        def __call__(self, img, rng=None):
            return torch.tensor([rng.random() for _ in range(4)], dtype=torch.float64)

    def implicit(img):
        return torch.tensor([random.random() for _ in range(4)], dtype=torch.float64)

    a, b = PairDataset(idx, Explicit(), seed=5), PairDataset(idx, implicit, seed=5)
    for key in [(0, 0), (1, 3), (0, 2, 1)]:
        assert torch.equal(a[key]["image"], b[key]["image"]), key


# ------------------------------------------------------------------------------ images.py
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pil_exif_transpose(orientation):
    arr = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", exif=exif)
    img = Image.open(io.BytesIO(buf.getvalue()))
    want = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    got = upright(img)
    assert got.size == want.size and np.array_equal(np.asarray(got), np.asarray(want))
    if orientation != 1:
        assert not (got.size == (6, 4) and np.array_equal(np.asarray(got), arr))


# ------------------------------------------------------------------------------ tokenizer.py
def test_clean_text_unescapes_html_twice_as_openai_basic_clean():
    # OpenAI's basic_clean: ftfy.fix_text, then html.unescape(html.unescape(text)).strip(). ftfy leaves
    # entities alone in text with HTML tags, so only the double unescape turns &amp;amp; into &.
    for text in ["<b>tom &amp;amp; jerry</b>", "a &amp;lt;dog&amp;gt;", "<i>x</i> &amp;quot;q&amp;quot;"]:
        try:
            import ftfy

            fixed = ftfy.fix_text(text)
        except ImportError:  # pragma: no cover
            fixed = text
        ref = " ".join(html.unescape(html.unescape(fixed)).strip().split()).lower()
        assert clean_text(text) == ref, text
    assert clean_text("<b>tom &amp;amp; jerry</b>") == "<b>tom & jerry</b>"


@pytest.fixture(scope="module")
def clip_tok():
    return ClipTokenizer()


def test_error_mode_refuses_a_text_one_token_too_long(clip_tok):
    text = "a dog runs on the beach ."
    n = len(clip_tok.encode(text))
    row = clip_tok(text, context_length=n + 2, on_overflow="error")[0]  # SOT + n + EOT fits exactly
    assert row[0] == clip_tok.sot_token_id and row[n + 1] == clip_tok.eot_token_id
    with pytest.raises(ValueError, match="over the context length"):
        clip_tok(text, context_length=n + 1, on_overflow="error")
    cut = clip_tok(text, context_length=n + 1)[0]  # truncate: n - 1 text tokens, EOT last
    assert cut[1:n].tolist() == clip_tok.encode(text)[: n - 1] and cut[n] == clip_tok.eot_token_id


def test_trained_bpe_reaches_the_requested_vocab_size():
    words = ["dog", "cat", "horse", "beach", "grass", "snow", "running", "jumping", "water", "little", "girl",
             "brown", "street", "fence", "wooden", "shirt", "woman", "man", "ball", "night"]
    corpus = [" ".join(words[(i * k) % len(words)] for k in range(1, 8)) for i in range(200)]
    tok = train_bpe_tokenizer(corpus, vocab_size=560, min_frequency=1)
    # 512 byte symbols + (vocab_size - 514) merges + SOT + EOT: the corpus has far more than 46 merges
    assert tok.vocab_size == 560
    assert tok.eot_token_id == 559 and tok.sot_token_id == 558
