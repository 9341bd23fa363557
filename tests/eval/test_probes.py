import random

import numpy as np
import pytest
import torch
from _evalhelpers import classification_wds
from PIL import Image

import kizuna
from kizuna.eval.datasets import load_dataset
from kizuna.eval.probes import (
    CORRUPTIONS, corrupt, evaluate_robustness, relation_swap_probe, render_text, typographic_attack,
    winoground_scores,
)


def test_winoground_scores_by_hand():
    sims = torch.tensor([
        [[0.9, 0.1], [0.2, 0.8]],  # both right: text, image, group
        [[0.9, 0.1], [0.95, 0.8]],  # text ok (0.9>0.1, 0.8>0.95? no) -> text fails; image: 0.9>0.95 no
        [[0.5, 0.4], [0.3, 0.6]],  # text ok, image ok (0.5>0.3, 0.6>0.4)
        [[0.5, 0.5], [0.1, 0.9]],  # tie in text -> text fails; image ok
    ])
    s = winoground_scores(sims)
    assert s == {"text_score": 0.5, "image_score": 0.75, "group_score": 0.5, "groups": 4.0}
    with pytest.raises(ValueError):
        winoground_scores(torch.zeros(3, 2, 3))


def test_relation_swap_matches_synthetic_evaluate_probes(tiny):
    from kizuna.data.synthetic import evaluate_probes, make_probes

    model, tok = tiny
    probes = make_probes(seed=3, n_per_task=24, tasks=["relation_swap"])
    pre = kizuna.get_preprocess(model)
    with torch.no_grad():
        ref = evaluate_probes(probes, lambda ims: model.encode_image(torch.stack([pre(i) for i in ims])),
                              lambda ts: model.encode_text(tok(ts)))
    ours = relation_swap_probe(model, tok, probes=probes["relation_swap"], batch_size=5)
    assert ours["groups"] == 12
    for k in ("text_score", "image_score", "group_score"):
        assert ours[k] == pytest.approx(ref[f"relation_swap/{k}"])
    assert ours["caption_acc"] == pytest.approx(ref["relation_swap"])
    # drawn at the model's own size by default, as the training's probes draw them (a fixed 64 px rescaled
    # every scene, and `kizuna eval probes` disagreed with the demo's numbers on the same checkpoint)
    own = make_probes(seed=3, image_size=model.image_size[0], n_per_task=24, tasks=["relation_swap"])
    assert model.image_size[0] != 64
    assert relation_swap_probe(model, tok, n_groups=12, seed=3) == relation_swap_probe(
        model, tok, probes=own["relation_swap"])


def test_corruptions_are_deterministic_and_get_worse():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize((128, 128), Image.BICUBIC)
    ref = np.asarray(img, dtype=np.float32)
    for name in CORRUPTIONS:
        a = corrupt(img, name, 3, random.Random(5))
        assert a.size == img.size and a.mode == "RGB"
        assert np.array_equal(np.asarray(a), np.asarray(corrupt(img, name, 3, random.Random(5))))
        d1 = np.abs(np.asarray(corrupt(img, name, 1, random.Random(5)), dtype=np.float32) - ref).mean()
        d5 = np.abs(np.asarray(corrupt(img, name, 5, random.Random(5)), dtype=np.float32) - ref).mean()
        assert 0 < d1 < d5, name
    with pytest.raises(ValueError):
        corrupt(img, "fog", 1)


def test_render_text_writes_on_the_lower_part():
    img = Image.new("RGB", (96, 96), (90, 120, 60))
    out = np.asarray(render_text(img, "automobile")).astype(int)
    diff = np.abs(out - np.asarray(img).astype(int)).sum(-1) > 0
    assert diff[60:].sum() > 50 and diff[:40].sum() == 0
    assert diff.any(axis=0)[:5].sum() == 0  # the long word was shrunk to fit the width


def test_robustness_and_typographic_on_a_tiny_dataset(tmp_path, tiny):
    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=12, corrupt=(5,)))
    r = evaluate_robustness(model, tok, ds, corruptions=["gaussian_noise", "contrast"], severities=(1, 5),
                            progress=False, batch_size=8)
    assert [(x["corruption"], x["severity"]) for x in r.rows] == [
        ("gaussian_noise", 1), ("gaussian_noise", 5), ("contrast", 1), ("contrast", 5)]
    assert r.n == 11 and r.skipped["corrupt_image"] == 1
    again = evaluate_robustness(model, tok, ds, corruptions=["gaussian_noise"], severities=(5,), progress=False)
    assert again.rows[0]["acc"] == r.rows[1]["acc"]  # seeded noise
    m = r.metrics
    assert m["shifted_acc1"] == pytest.approx(np.mean([x["acc"] for x in r.rows]))
    assert "all shifts" in r.table()
    t = typographic_attack(model, tok, ds, progress=False, batch_size=8)
    labels = ds.labels
    assert (t.written != labels).all() and t.written.max() < 3
    assert 0 <= t.metrics["follow_rate"] <= 1 - t.metrics["attacked_acc1"] + 1e-9
    assert t.metrics["drop"] == pytest.approx(t.metrics["clean_acc1"] - t.metrics["attacked_acc1"])
    # the record had no image count or skips, unlike the robustness one
    assert t.n == 11 and t.skipped["corrupt_image"] == 1
    assert t.to_dict()["n"] == 11 and t.to_dict()["skipped"] == {"corrupt_image": 1}


def test_typographic_follow_rate_counts_the_written_word(tmp_path, tiny, monkeypatch, typographic_word):
    """With an image encoder that 'reads' (features = the class embedding of the written word), every
    prediction follows the word: follow_rate 1, attacked accuracy 0."""
    from kizuna.eval.classification import class_embeddings

    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=9))
    w = class_embeddings(model, tok, ds.classnames, ds.templates)
    orig = model.encode_image

    def encode_image(x, normalize=False):
        words = typographic_word.words_of(x, model)
        if all(words):  # an attacked batch: each image's features are its written word's class embedding
            return torch.stack([w[ds.classnames.index(word)] for word in words])
        assert not any(words)
        return orig(x, normalize=normalize)

    monkeypatch.setattr(model, "encode_image", encode_image)
    t = typographic_attack(model, tok, ds, progress=False, batch_size=100)
    assert t.metrics["follow_rate"] == 1.0 and t.metrics["attacked_acc1"] == 0.0
    assert t.predictions.tolist() == t.written.tolist()


def test_typographic_attack_when_every_image_of_a_written_class_is_corrupt(tmp_path, tiny):
    """Each written class is encoded as its own subset; one made only of corrupt images stopped the probe
    ("none of its 1 images could be used")."""
    from kizuna.eval.probes import _wrong_classes

    model, tok = tiny
    labels = [0, 1, 2, 0, 1, 2]
    written = _wrong_classes(np.array(labels), 3, 0)
    only = [i for i in range(6) if written[i] == written[0]]  # every image that gets image 0's word
    ds = load_dataset(classification_wds(tmp_path / "d", n=6, labels=labels, corrupt=tuple(only)))
    t = typographic_attack(model, tok, ds, progress=False, batch_size=4)
    assert 0 <= t.metrics["attacked_acc1"] <= 1


def test_an_empty_dataset_is_a_clear_error(tmp_path, tiny):
    from kizuna.eval.datasets import DatasetError
    from kizuna.eval.encode import encode_images

    model, _ = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=4))
    with pytest.raises(DatasetError, match="no images to encode"):
        encode_images(model, ds.subset(np.array([], dtype=np.int64)), progress=False)


def test_a_subset_naming_an_image_twice_encodes_both(tmp_path, tiny):
    from kizuna.eval.encode import encode_images

    model, _ = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=4, corrupt=(2,)))
    enc = encode_images(model, ds.subset(np.array([0, 0, 1, 2, 1])), progress=False, batch_size=2)
    assert enc.valid.tolist() == [True, True, True, False, True]  # the first 0 was left empty, uncounted
    torch.testing.assert_close(enc.features[0], enc.features[1])
    torch.testing.assert_close(enc.features[2], enc.features[4])


def test_unknown_corruptions_are_refused_before_any_encoding(tmp_path, tiny, monkeypatch):
    """A misspelt corruption stopped the probe only after the clean pass had been encoded."""
    from kizuna.eval import probes as P

    model, tok = tiny
    ds = load_dataset(classification_wds(tmp_path / "d", n=4))

    def no_encoding(*a, **k):
        raise AssertionError("encoded images before checking the corruption names")

    monkeypatch.setattr(P, "encode_images", no_encoding)
    with pytest.raises(ValueError, match=r"unknown corruption\(s\) 'fog' \(known: gaussian_blur"):
        evaluate_robustness(model, tok, ds, corruptions=["jpeg", "fog"], progress=False)
    for levels in ((6,), (5, 5, 1)):  # a level twice weighed twice in the mean over shifts
        with pytest.raises(ValueError, match=r"severities are distinct levels 1\.\.5"):
            evaluate_robustness(model, tok, ds, corruptions=["jpeg"], severities=levels, progress=False)
    from kizuna.eval.suite import check_run_values

    with pytest.raises(ValueError, match=r"severities are distinct levels 1\.\.5"):
        check_run_values({"model": "m", "dataset": "d", "task": ["robustness"], "severities": [5, 5, 1]}, "run 1")
    run = {"model": "m", "dataset": "d", "task": ["robustness"], "corruptions": "jpeg,contrast,contrast"}
    check_run_values(run, "run 1")
    assert run["corruptions"] == ["jpeg", "contrast"]


def test_kept_share_of_a_zero_clean_accuracy_is_not_a_number():
    """Clean accuracy 0 was divided by 1e-12: "kept 8333333333333%" in the table and 8.3e10 in results.json."""
    from kizuna.eval import probes as P
    from kizuna.eval.probes import RobustnessResult

    rows = [{"corruption": "jpeg", "severity": 1, "acc": 0.25, "drop": -0.25, "relative": P._kept(0.25, 0.0)}]
    r = RobustnessResult(0.0, rows, P.SkipCounter(), "d", 4)
    assert rows[0]["relative"] != rows[0]["relative"]
    assert all(line.rstrip().endswith("-") for line in r.table().splitlines() if "jpeg" in line or "mean" in line)


@pytest.mark.parametrize("value", ["0", "1,1", "6", "none"])
def test_probe_severities_outside_one_to_five_or_repeated_are_refused(value, capsys):
    """--severities 0 ran the defaults 1,3,5; 1,1 counted a level twice in the mean."""
    from kizuna.apps.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "probes", "--model", "m", "--dataset", "d", "--severities", value])
    assert "distinct levels from 1 to 5" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--dataset", "d", "--no-robustness"], []])
@pytest.mark.parametrize("flag", [["--severities", "1"], ["--corruptions", "jpeg"]])
def test_robustness_settings_without_the_robustness_probe_are_refused(extra, flag, capsys):
    """--severities / --corruptions with --no-robustness did nothing and said nothing (without --dataset they
    were refused already): refused before any model is loaded, naming the flags."""
    from kizuna.apps.cli import main

    assert main(["eval", "probes", "--model", "no-such-model", *extra, *flag]) != 0
    err = capsys.readouterr().err
    assert "--severities / --corruptions set the robustness probe" in err
    assert ("--no-robustness" in err) == bool(extra)
