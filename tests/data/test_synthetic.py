"""Tests for the embedded synthetic world (kizuna.data.synthetic).

Checks run on scene metadata (``sample_meta``), not pixels, except for determinism and
image-size checks.  Probe scoring is verified with an oracle encoder that embeds images
from their metadata and texts by parsing them, so it must score 100%.
"""

import re
import time
from collections import Counter

import pytest
import torch

from kizuna.data.synthetic import (
    COLOURS,
    HELDOUT_PAIRS,
    PROBE_TASKS,
    SHAPES,
    SyntheticWorld,
    evaluate_probes,
    make_probes,
)

COLOUR_SET, SHAPE_SET = set(COLOURS), set(SHAPES)
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
PLURALS = {s + ("es" if s.endswith("s") else "s"): s for s in SHAPES}
N_TRAIN = 5000


@pytest.fixture(scope="module")
def train_metas():
    world = SyntheticWorld(seed=0, split="train", length=N_TRAIN)
    return [world.sample_meta(i) for i in range(N_TRAIN)]


@pytest.fixture(scope="module")
def probes():
    return make_probes(seed=1, image_size=64, n_per_task=120)


# ----------------------------------------------------------------------------- helpers


def find(meta, colour, shape):
    hits = [o for o in meta.objects if (o.colour, o.shape) == (colour, shape)]
    assert hits, (meta.caption, meta.pairs)
    return hits[0]


REL_RE = re.compile(
    r"^an? (\w+) (\w+) (left of|to the left of|right of|above|below|underneath|and) an? (\w+) (\w+)$"
)


def check_relation_geometry(meta, caption):
    m = REL_RE.match(caption)
    assert m, caption
    c1, s1, rel, c2, s2 = m.groups()
    a, b = find(meta, c1, s1), find(meta, c2, s2)
    if rel in ("left of", "to the left of"):
        assert a.x < b.x
    elif rel == "right of":
        assert a.x > b.x
    elif rel == "above":
        assert a.y < b.y
    elif rel in ("below", "underneath"):
        assert a.y > b.y
    return rel


# ----------------------------------------------------------------------------- the world


def test_determinism_and_image_size():
    a, b = SyntheticWorld(seed=0), SyntheticWorld(seed=0)
    for i in (0, 7, 12345, 99_999, 3):  # any access order
        (ia, ca), (ib, cb) = a[i], b[i]
        assert ca == cb and ia.tobytes() == ib.tobytes()
        assert ia.size == (64, 64) and ia.mode == "RGB"
    other_seed, other_split = SyntheticWorld(seed=1), SyntheticWorld(seed=0, split="val")
    assert [a[i][0].tobytes() for i in range(5)] != [other_seed[i][0].tobytes() for i in range(5)]
    assert [a[i][0].tobytes() for i in range(5)] != [other_split[i][0].tobytes() for i in range(5)]
    big = SyntheticWorld(seed=0, image_size=96)
    assert big[0][0].size == (96, 96) and big[0][1] == a[0][1]  # same scene, other resolution


def test_dataset_protocol():
    w = SyntheticWorld(length=10)
    assert len(w) == 10 and w[-1][1] == w[9][1]
    with pytest.raises(IndexError):
        w[10]
    with pytest.raises(ValueError):
        SyntheticWorld(split="test")
    only_counts = SyntheticWorld(mix={"count": 1.0}, length=50)
    assert {only_counts.sample_meta(i).kind for i in range(50)} == {"count"}
    assert len(w.all_pairs) == len(COLOURS) * len(SHAPES)
    assert set(w.seen_pairs) | set(w.heldout_pairs) == set(w.all_pairs)


def test_heldout_pairs_never_in_training(train_metas):
    held = set(HELDOUT_PAIRS)
    for m in train_metas:
        assert not held & set(m.pairs), (m.caption, m.pairs)
    val = SyntheticWorld(seed=3, split="val", length=1000)
    assert not any(held & set(val.sample_meta(i).pairs) for i in range(1000))
    heldout = SyntheticWorld(seed=0, split="heldout", length=300)
    assert all(set(heldout.sample_meta(i).pairs) <= held for i in range(300))


def test_heldout_design():
    w = SyntheticWorld()
    assert 0.15 <= len(w.heldout_pairs) / len(w.all_pairs) <= 0.25
    seen = Counter(c for c, _ in w.seen_pairs), Counter(s for _, s in w.seen_pairs)
    assert min(seen[0][c] for c in w.colours) >= 4 and min(seen[1][s] for s in w.shapes) >= 6


def test_training_coverage(train_metas):
    colours = {o.colour for m in train_metas for o in m.objects}
    shapes = {o.shape for m in train_metas for o in m.objects}
    assert colours == COLOUR_SET and shapes == SHAPE_SET
    pairs = {p for m in train_metas for p in m.pairs}
    assert pairs == set(SyntheticWorld().seen_pairs)
    kinds = Counter(m.kind for m in train_metas)
    assert set(kinds) == {"single", "relation", "count", "text"}
    assert kinds["single"] > kinds["relation"] > 0.1 * N_TRAIN
    counts = Counter(len(m.objects) for m in train_metas if m.kind == "count")
    assert set(counts) == {1, 2, 3, 4}
    words = {m.word for m in train_metas if m.word}
    assert SHAPE_SET <= words and COLOUR_SET <= words  # the model can learn to read them


def test_captions_match_metadata(train_metas):
    for m in train_metas:
        cap = m.caption
        quoted = re.findall(r"'([a-z]+)'", cap)
        if m.word is not None:
            assert quoted == [m.word], cap
        else:
            assert not quoted, cap
        bare = re.sub(r"'[a-z]+'", "", cap)
        toks = re.findall(r"[a-z]+", bare)
        colours = {t for t in toks if t in COLOUR_SET}
        shapes = {t for t in toks if t in SHAPE_SET} | {PLURALS[t] for t in toks if t in PLURALS}
        obj_colours, obj_shapes = {o.colour for o in m.objects}, {o.shape for o in m.objects}
        assert colours <= obj_colours and shapes <= obj_shapes, (cap, m.pairs)
        if not m.objects:
            assert m.kind == "text" and not colours and not shapes
            continue
        assert colours or shapes, cap
        if m.kind in ("relation", "count", "text"):  # these always name colour and shape
            assert colours == obj_colours and shapes == obj_shapes, (cap, m.pairs)
        if m.kind == "single":
            for size in ("small", "large"):
                if size in toks:
                    assert m.objects[0].size == size, cap
            o = m.objects[0]
            if m.position is not None:
                assert {"left": o.x < 0.4, "right": o.x > 0.6, "top": o.y < 0.4, "bottom": o.y > 0.6}[m.position]
                assert m.position in toks
            assert not {"left", "right", "top", "bottom"} & set(toks) or m.position
        elif m.kind == "relation":
            check_relation_geometry(m, re.sub(r"^(a picture of|a photo of) ", "", cap))
        elif m.kind == "count":
            nums = [NUMBERS[t] for t in toks if t in NUMBERS]
            assert (nums or [1]) == [len(m.objects)], cap
            assert any(t in PLURALS for t in toks) == (len(m.objects) > 1), cap
        elif m.kind == "text":
            assert len(m.objects) == 1 and m.objects[0].size == "medium"
            if "above" in toks:
                assert m.word_y < 0.5
            if "below" in toks:
                assert m.word_y > 0.5


def test_generation_speed():
    """Not an assertion: prints images/s for the report (single process)."""
    w = SyntheticWorld(seed=0)
    w[0]
    n, t = 600, time.perf_counter()
    for i in range(n):
        w[i]
    rate = n / (time.perf_counter() - t)
    print(f"\nSyntheticWorld 64px generation: {rate:.0f} images/s (one process)")


# ----------------------------------------------------------------------------- probes


def test_probe_structure(probes):
    assert list(probes) == list(PROBE_TASKS)
    held = set(HELDOUT_PAIRS)
    for name, p in probes.items():
        assert p.name == name and p.description
        assert len(p.images) == len(p.labels) == len(p.metas) == 120
        assert all(im.size == (64, 64) for im in p.images)
        for i in range(len(p)):
            cands = p.candidates_for(i)
            assert 0 <= p.labels[i] < len(cands) and len(set(cands)) == len(cands)
        pairs = {q for m in p.metas for q in m.pairs}
        if name == "unseen_combos":
            assert pairs == held
        else:
            assert not pairs & held, name
    assert probes["shape"].shared and probes["counting"].shared is False
    for name in ("shape", "typographic", "typographic_clean"):
        p = probes[name]
        assert all(SHAPES[l] == m.objects[0].shape for l, m in zip(p.labels, p.metas))
        assert Counter(p.labels) == Counter({k: 20 for k in range(6)})  # balanced
    for name in ("colour", "typographic_colour", "typographic_colour_clean"):
        p = probes[name]
        assert all(list(COLOURS)[l] == m.objects[0].colour for l, m in zip(p.labels, p.metas))
    c = probes["counting"]
    assert all(l + 1 == len(m.objects) for l, m in zip(c.labels, c.metas))
    assert c.candidates_for(0)[1].startswith("two ") and abs(c.chance - 0.25) < 1e-9


def test_relation_swap_groups(probes):
    r = probes["relation_swap"]
    assert sorted(i for g in r.groups for i in g) == list(range(len(r)))
    for a, b in r.groups:
        assert r.candidates_for(a) == r.candidates_for(b) and r.labels[a] != r.labels[b]
        ma, mb = r.metas[a], r.metas[b]
        assert ma.pairs == mb.pairs[::-1]  # identities swapped ...
        assert [(o.x, o.y) for o in ma.objects] == [(o.x, o.y) for o in mb.objects]  # ... positions kept
        for i in (a, b):
            rel = check_relation_geometry(r.metas[i], r.candidates_for(i)[r.labels[i]])
            assert rel in ("left of", "above")
            with pytest.raises(AssertionError):  # the other caption is false for this image
                check_relation_geometry(r.metas[i], r.candidates_for(i)[1 - r.labels[i]])
    assert {m.relation for m in r.metas} == {"left of", "above"}


def test_typographic_pairs(probes):
    for base, vocab, attr in (("typographic", SHAPES, "shape"), ("typographic_colour", tuple(COLOURS), "colour")):
        t, c = probes[base], probes[base + "_clean"]
        assert t.labels == c.labels and c.distractors is None
        for i, (mt, mc) in enumerate(zip(t.metas, c.metas)):
            assert mt.word in vocab and mt.word != getattr(mt.objects[0], attr)
            assert vocab.index(mt.word) == t.distractors[i]
            assert mc.word is None and mc.objects == mt.objects and mc.noise_seed == mt.noise_seed
            assert t.images[i].tobytes() != c.images[i].tobytes()


def test_probes_deterministic_and_seeded():
    a = make_probes(seed=1, n_per_task=4, tasks=["shape", "relation_swap"])
    b = make_probes(seed=1, n_per_task=4, tasks=["shape", "relation_swap"])
    d = make_probes(seed=2, n_per_task=4, tasks=["shape"])
    for name in a:
        assert [im.tobytes() for im in a[name].images] == [im.tobytes() for im in b[name].images]
    assert [im.tobytes() for im in a["shape"].images] != [im.tobytes() for im in d["shape"].images]
    with pytest.raises(ValueError):
        make_probes(tasks=["nope"])


# ----------------------------------------------------------------------------- scoring


def text_key(text):
    """Parse any probe candidate into the fact it asserts."""
    if m := re.fullmatch(r"a photo of an? (\w+)\.", text):
        return ("shape", m[1])
    if m := re.fullmatch(r"a photo of an? (\w+) object\.", text):
        return ("colour", m[1])
    if m := re.fullmatch(r"(one|two|three|four) (\w+) (\w+)", text):
        return ("count", NUMBERS[m[1]], m[2], PLURALS.get(m[3], m[3]))
    if m := re.fullmatch(r"an? (\w+) (\w+) (left of|above) an? (\w+) (\w+)", text):
        return ("rel", (m[1], m[2]), m[3], (m[4], m[5]))
    if m := re.fullmatch(r"an? (\w+) (\w+)", text):
        return ("pair", m[1], m[2])
    raise AssertionError(text)


def image_key(task, meta, read_words=False):
    """Ground-truth fact of a probe image, from metadata (``read_words``: a model fooled by text)."""
    o = meta.objects[0]
    if task in ("shape", "typographic", "typographic_clean"):
        return ("shape", meta.word if read_words and meta.word else o.shape)
    if task.startswith(("colour", "typographic_colour")):
        return ("colour", meta.word if read_words and meta.word else o.colour)
    if task.endswith("combos"):
        return ("pair", o.colour, o.shape)
    if task == "counting":
        return ("count", len(meta.objects), o.colour, o.shape)
    a, b = meta.objects
    dx, dy = b.x - a.x, b.y - a.y
    rel = "left of" if abs(dx) > abs(dy) else "above"
    first, second = (a, b) if (dx if rel == "left of" else dy) > 0 else (b, a)
    return ("rel", (first.colour, first.shape), rel, (second.colour, second.shape))


class OneHot:
    """Maps facts to one-hot vectors, so equal facts have cosine 1 and different ones 0."""

    def __init__(self, dim=4096):
        self.dim, self.index = dim, {}

    def __call__(self, keys):
        out = torch.zeros(len(keys), self.dim)
        for row, k in enumerate(keys):
            out[row, self.index.setdefault(k, len(self.index))] = 1.0
        return out


def oracle_scores(probes, read_words=False):
    results = {}
    for name, p in probes.items():
        onehot, by_id = OneHot(), {id(im): m for im, m in zip(p.images, p.metas)}
        enc_img = lambda ims: onehot([image_key(name, by_id[id(im)], read_words) for im in ims])  # noqa: E731
        enc_txt = lambda txts: onehot([text_key(t) for t in txts])  # noqa: E731
        results.update(evaluate_probes({name: p}, enc_img, enc_txt, batch_size=50))
    return results


def test_oracle_encoder_is_perfect(probes):
    res = oracle_scores(probes)
    for name in PROBE_TASKS:
        assert res[name] == 1.0, name
    for k in ("text_score", "image_score", "group_score"):
        assert res[f"relation_swap/{k}"] == 1.0
    assert res["typographic/attack_rate"] == 0.0 and res["typographic_colour/attack_rate"] == 0.0


def test_word_reading_oracle_is_fully_attacked(probes):
    res = oracle_scores({k: probes[k] for k in ("typographic", "typographic_clean", "typographic_colour")},
                        read_words=True)
    assert res["typographic"] == 0.0 and res["typographic/attack_rate"] == 1.0
    assert res["typographic_colour/attack_rate"] == 1.0
    assert res["typographic_clean"] == 1.0  # no word to read: falls back to the object


def test_random_and_constant_encoders_are_at_chance(probes):
    g = torch.Generator().manual_seed(0)
    text_vecs = {}

    def enc_txt(txts):
        return torch.stack([text_vecs.setdefault(t, torch.randn(64, generator=g)) for t in txts])

    res = evaluate_probes(probes, lambda ims: torch.randn(len(ims), 64, generator=g), enc_txt)
    for name, p in probes.items():
        assert abs(res[name] - p.chance) < 0.15, (name, res[name], p.chance)
    assert res["relation_swap/group_score"] < 0.35

    const = evaluate_probes({"relation_swap": probes["relation_swap"]},
                            lambda ims: torch.ones(len(ims), 8), lambda txts: torch.ones(len(txts), 8))
    assert const["relation_swap"] == 0.5  # ties pick index 0; labels within a group differ
    for k in ("text_score", "image_score", "group_score"):
        assert const[f"relation_swap/{k}"] == 0.0  # ties never count as a win


# ----------------------------------------------------------------------------- hard-negative twins


def test_hard_negative_twin_changes_exactly_one_attribute_and_one_word():
    world = SyntheticWorld(seed=3, split="train", length=2000)
    held, twins = set(HELDOUT_PAIRS), 0
    for i in range(400):
        meta, twin = world.sample_meta(i), world.hard_negative_meta(i)
        if meta.kind != "single":
            assert twin is None
            continue
        twins += 1
        (c0, s0), (c1, s1) = meta.pairs[0], twin.pairs[0]
        assert (c0 == c1) != (s0 == s1), (meta.caption, twin.caption)  # exactly one attribute differs
        assert (c1, s1) not in held  # a twin never shows a held-out pair
        a, b = meta.objects[0], twin.objects[0]
        assert (a.size, a.x, a.y, a.r, twin.position) == (b.size, b.x, b.y, b.r, meta.position)
        # Same template: the captions differ in one word (plus the article before it).
        diff = [(x, y) for x, y in zip(meta.caption.split(), twin.caption.split()) if x != y]
        assert len(meta.caption.split()) == len(twin.caption.split()), (meta.caption, twin.caption)
        assert [d for d in diff if d[0] not in ("a", "an")] in ([(s0, s1)], [(s0 + ".", s1 + ".")],
                                                                [(c0, c1)]), (meta.caption, twin.caption)
    assert twins > 150
    assert world.hard_negative_meta(7) == world.hard_negative_meta(7)  # deterministic


def test_hard_negative_batches_put_twins_next_to_their_scene():
    from kizuna.train.data import SyntheticPairs

    def to_tensor(img):
        return torch.zeros(1)

    plain = SyntheticPairs(1000, 32, to_tensor, seed=0)
    twinned = SyntheticPairs(1000, 32, to_tensor, seed=0, hard_negatives=True)
    keys = [(i, 0) for i in range(64)]
    a, b = plain.__getitems__(keys), twinned.__getitems__(keys)
    assert [x["caption"] for x in a[0::2]] == [x["caption"] for x in b[0::2]]  # even slots unchanged
    n_twins = 0
    for j in range(1, 64, 2):
        twin = twinned.world.hard_negative_meta(j - 1)
        assert b[j]["caption"] == (twin.caption if twin else a[j]["caption"])
        assert b[j]["index"] == j  # the slot's own index: epoch accounting is unchanged
        n_twins += twin is not None
    assert n_twins >= 8
