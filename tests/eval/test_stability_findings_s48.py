"""A SigLIP model's predictions are ranked by their logits: its float32 sigmoids are exactly 1.0 above a logit of
about 17 (a trained model's scale is over 100), and every class tied there came out in label order."""
from __future__ import annotations

import json
import re
import math

import torch

import kizuna
from kizuna.eval.zeroshot import ZeroShotClassifier

LABELS = ["cat", "dog", "car", "tree", "boat", "bird"]


def _saturated_siglip():
    torch.manual_seed(0)
    model = kizuna.create_model("siglip-mu-8").eval()
    with torch.no_grad():  # logits 80 +- 10: every sigmoid is 1.0 in float32, the logits all differ
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(80.0)
    return model, kizuna.get_tokenizer(model)


def _image(model, seed=3):
    size = model.cfg.vision.image_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_topk_of_saturated_sigmoids_follows_the_logits():
    model, tok = _saturated_siglip()
    clf = ZeroShotClassifier(model, tok, LABELS)
    x = _image(model)
    logits = clf.logits(x)[0]
    assert bool((clf.predict_proba(x) == 1.0).all())  # the setting: the probabilities cannot rank
    assert len(set(logits.tolist())) == len(LABELS)
    expected = [LABELS[i] for i in torch.argsort(logits, descending=True).tolist()]
    assert expected[:3] != LABELS[:3]  # label order differs from the true one here (the check has power)
    ranked = clf.topk(x, k=len(LABELS))[0]
    assert [name for name, _ in ranked] == expected
    assert all(p == 1.0 for _, p in ranked)  # the probabilities shown are still the sigmoids


def test_the_analysis_prediction_panel_ranks_by_the_logits(tmp_path):
    from kizuna.analysis.report import load_target, predict_report

    model, _ = _saturated_siglip()
    target = load_target(model)
    x = _image(model)
    predict_report(target, x, tmp_path, labels=LABELS, top_k=3)
    record = json.loads((tmp_path / "predict.json").read_text())
    clf = ZeroShotClassifier(model, kizuna.get_tokenizer(model), LABELS)
    logits = clf.logits(x)[0]
    expected = [LABELS[i] for i in torch.argsort(logits, descending=True).tolist()[:3]]
    assert [name for name, _ in record["top"]] == expected
    assert expected != LABELS[:3]


def test_the_prediction_panel_takes_scores_to_rank_by(tmp_path, monkeypatch):
    import numpy as np
    import pytest
    from matplotlib.axes import Axes

    from kizuna.analysis import figures

    said = {}
    real_title, real_ticks = Axes.set_title, Axes.set_yticklabels
    monkeypatch.setattr(Axes, "set_title", lambda ax, text, *a, **k: said.setdefault("titles", []).append(text) or
                        real_title(ax, text, *a, **k))
    monkeypatch.setattr(Axes, "set_yticklabels", lambda ax, names, *a, **k: said.setdefault("bars", list(names)) and
                        real_ticks(ax, names, *a, **k))
    figures.plot_prediction_panel(np.zeros((4, 4, 3)), ["a", "b", "c"], [1.0, 1.0, 0.5], tmp_path / "p.png",
                                  top_k=2, scores=[20.0, 30.0, 1.0], true_label="b")
    assert said["bars"] == ["b", "a"]  # highest first (drawn at the top)
    assert "true label rank 1" in said["titles"][-1]
    with pytest.raises(ValueError, match="3 probabilities but 2 scores"):
        figures.plot_prediction_panel(np.zeros((4, 4, 3)), ["a", "b", "c"], [1.0, 1.0, 0.5], tmp_path / "q.png",
                                      scores=[1.0, 2.0])


LONG = "striped " * 80  # cut at the context length: the names differ only past it


def test_class_names_the_tokenizer_reads_alike_are_warned_of():
    import pytest

    from kizuna.eval.classification import class_embeddings
    from kizuna.eval.datasets import RepeatedClassNamesWarning

    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    tok = kizuna.get_tokenizer(model)
    names = [LONG + "cat", LONG + "dog", "car"]
    with pytest.warns(RepeatedClassNamesWarning, match=r"striped cat' = 'striped .* dog' \(classes 0, 1\) are one text to the model's tokenizer"):
        weights = class_embeddings(model, tok, names, ["a photo of a {c}."], cache=False)
    assert torch.equal(weights[0], weights[1])  # what the warning says: one weight
    import warnings

    with warnings.catch_warnings():  # names that differ to the tokenizer, and a repeat of text warned at load
        warnings.simplefilter("error")
        class_embeddings(model, tok, ["cat", "dog", "car"], ["a photo of a {c}."], cache=False)
        class_embeddings(model, tok, ["Cat", "cat", "car"], ["a photo of a {c}."], cache=False)


def test_eval_zeroshot_says_so_on_the_command_line(tmp_path, capsys):
    from PIL import Image

    from kizuna.apps.cli import main

    torch.manual_seed(0)
    model = tmp_path / "clip"
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), model)
    for k, name in enumerate(["a", "b", "c"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (40 * k, 90, 20 * i)).save(tmp_path / "data" / name / f"{i}.png")
    names = tmp_path / "names.txt"
    names.write_text(f"{LONG}cat\n{LONG}dog\ncar\n")
    assert main(["eval", "zeroshot", "--model", str(model), "--dataset", str(tmp_path / "data"), "--classnames",
                 str(names), "--no-progress", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "are one text to the model's tokenizer" in err and "(classes 0, 1)" in err


def test_a_template_with_a_field_of_another_form_is_told_what_is_wrong():
    import pytest

    from kizuna.eval.datasets import DatasetError, read_templates

    for template, said in (("a {c!r}", "{c!r} is not a place"), ("a {c:>10}", "{c:>10} is not a place"),
                           ("a {c.upper}", "{c.upper} is not a place")):
        with pytest.raises(DatasetError, match=re.escape(said)):
            read_templates([template])
    with pytest.raises(DatasetError, match="has no '{c}' placeholder"):
        read_templates(["a photo"])


def test_a_memory_hit_with_a_cache_folder_does_not_hash_the_tower_again(tmp_path, monkeypatch):
    """The file's name (a SHA-256 of every weight) was computed before the memory cache was asked: a hit with
    cache_dir cost more than reading the file."""
    from kizuna.eval import classification

    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    tok = kizuna.get_tokenizer(model)
    calls = []
    real = classification.content_hash
    monkeypatch.setattr(classification, "content_hash", lambda *a, **k: calls.append(1) or real(*a, **k))
    classification.clear_class_cache()
    first = classification.class_embeddings(model, tok, ["cat", "dog"], ["a {c}"], cache_dir=tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("classes-*.pt"))) == 1
    for _ in range(3):
        assert torch.equal(classification.class_embeddings(model, tok, ["cat", "dog"], ["a {c}"],
                                                           cache_dir=tmp_path), first)
    assert len(calls) == 1
    for f in tmp_path.glob("classes-*.pt"):  # a file removed meanwhile is written again from the hit
        f.unlink()
    classification.class_embeddings(model, tok, ["cat", "dog"], ["a {c}"], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("classes-*.pt"))) == 1 and len(calls) == 1
    with torch.no_grad():  # other weights: another file
        model.text.token_embed.weight.add_(1.0)
    classification.class_embeddings(model, tok, ["cat", "dog"], ["a {c}"], cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("classes-*.pt"))) == 2
