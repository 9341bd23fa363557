"""Metrics on degenerate inputs (session 52): R@K of fewer than K candidates, rows of zeros scored, a NaN image
tower in the relation-swap probe, plain-number loss scales, no Winoground groups."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kizuna.eval.classification import classify_features
from kizuna.eval.probes import relation_swap_probe, winoground_scores
from kizuna.eval.encode import NonFiniteFeatures
from kizuna.eval.retrieval import retrieval_from_features, retrieval_metrics
from kizuna.models.losses import clip_loss, siglip_loss


def _unit(n, d=16, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_recall_at_k_of_fewer_than_k_candidates_is_not_given():
    # 6 images, 9 captions: R@10 was 100% both ways whatever the model
    t2i = torch.tensor([0, 0, 1, 2, 2, 3, 4, 5, 5])
    r = retrieval_from_features(_unit(6), _unit(9, seed=1), t2i)
    m = r.metrics
    assert math.isnan(m["image_to_text_R@10"]) and math.isnan(m["text_to_image_R@10"])
    assert math.isnan(m["text_retrieval_recall@10"])  # (CLIP_benchmark's names follow)
    assert not math.isnan(m["image_to_text_R@5"]) and not math.isnan(m["text_to_image_R@5"])
    assert "R@10 n/a" in r.summary() and "nan" not in r.summary()
    # exactly K candidates: given (always 100%, as top-5 of 5 classes)
    assert retrieval_metrics(torch.tensor([3, 9]), torch.tensor([1]), num_images=10, num_texts=10)[
        "image_to_text_R@10"] == 1.0
    # without the counts (a caller's ranks): as before
    assert retrieval_metrics(torch.tensor([0, 2]), torch.tensor([1]))["text_to_image_R@10"] == 1.0


def test_best_metric_recall_at_k_on_too_few_candidates_is_refused(tmp_path):
    from _evalhelpers import retrieval_wds

    from kizuna.train.config import make_config
    from kizuna.train.contrastive import check_evaluation_data

    root = retrieval_wds(tmp_path / "ret", n=6)
    cfg = make_config(model="ViT-mu-8", data="synthetic", eval_retrieval=str(root), out=str(tmp_path / "run"),
                      best_metric="retrieval/text_to_image_R@10")
    with pytest.raises(ValueError, match="--best-metric retrieval/text_to_image_R@10: .* has 6 images to "
                                         "retrieve; R@10 says something only past 10"):
        check_evaluation_data(cfg)
    ok = make_config(model="ViT-mu-8", data="synthetic", eval_retrieval=str(root), out=str(tmp_path / "run"),
                     best_metric="retrieval/text_to_image_R@5")
    check_evaluation_data(ok)


def test_rows_of_zeros_are_refused_unless_masked():
    feats, weights = _unit(4), _unit(3, seed=2)
    feats[1:] = 0  # the rows ImageFeatures leaves for unreadable images
    with pytest.raises(ValueError, match="image_features: 3 of 4 rows are all zeros.*valid="):
        classify_features(feats, [0, 0, 0, 0], weights, ["a", "b", "c"])
    valid = torch.tensor([True, False, False, False])
    classify_features(feats, [0, 0, 0, 0], weights, ["a", "b", "c"], valid=valid)  # masked: scored
    img, txt = _unit(5), _unit(10, seed=3)
    img[0] = 0
    t2i = torch.arange(5).repeat_interleave(2)
    with pytest.raises(ValueError, match="image_features: 1 of 5 rows are all zeros"):
        retrieval_from_features(img, txt, t2i)
    masked = retrieval_from_features(img, txt, t2i, image_valid=torch.tensor([False, True, True, True, True]))
    assert masked.num_images == 4
    txt[3] = 0
    with pytest.raises(ValueError, match="text_features: 1 of"):
        retrieval_from_features(img, txt, t2i, image_valid=torch.tensor([False, True, True, True, True]))


def test_relation_swap_refuses_a_nan_image_tower():
    import kizuna
    from kizuna import get_tokenizer

    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    with torch.no_grad():
        list(model.visual.parameters())[-1].fill_(float("nan"))
    with pytest.raises(NonFiniteFeatures, match="relation swap: images"):
        relation_swap_probe(model, get_tokenizer(model), n_groups=4)


def test_no_groups_give_no_score():
    s = winoground_scores(torch.zeros(0, 2, 2))
    assert all(math.isnan(s[k]) for k in ("text_score", "image_score", "group_score")) and s["groups"] == 0


def test_losses_take_plain_number_scales():
    i, t = _unit(4), _unit(4, seed=5)
    assert torch.equal(clip_loss(i, t, 100.0), clip_loss(i, t, torch.tensor(100.0)))
    assert torch.equal(siglip_loss(i, t, 10.0, -10.0), siglip_loss(i, t, torch.tensor(10.0), torch.tensor(-10.0)))
    logits = 10.0 * i @ t.T - 10.0
    z = 2 * np.eye(4) - 1
    ref = -np.log(1 / (1 + np.exp(-z * logits.double().numpy()))).sum() / 4
    assert float(siglip_loss(i, t, 10.0, -10.0)) == pytest.approx(ref, rel=1e-5)


def test_eval_out_names_the_figures_it_wrote(tmp_path, capsys):
    """`eval zeroshot --out` said results.json and results.md, not the confusion figure beside them."""
    from _evalhelpers import classification_wds

    from kizuna.apps.cli import main

    root = classification_wds(tmp_path / "d", n=6)
    assert main(["eval", "zeroshot", "--model", "ViT-mu-8", "--dataset", str(root), "--out", str(tmp_path / "o"),
                 "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "o").glob("*.png"))
    assert written and f"(figures: {', '.join(written)})" in out
