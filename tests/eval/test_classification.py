import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _evalhelpers import classification_wds

import kizuna
from kizuna.eval.classification import (
    class_embeddings, classify_features, classify_scores, clear_class_cache, evaluate_zeroshot, rank_classes,
)
from kizuna.eval.datasets import load_dataset
from kizuna.eval.zeroshot import build_classifier, fill_template

CLASSES = ["cat", "dog", "car", "tree", "boat", "bird"]


def _pixels(model, ds):
    pre = kizuna.get_preprocess(model)
    pair = ds.pair_dataset(pre)
    return torch.stack([pair[int(i)]["image"] for i in ds.positions])


def _hf_feats(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_zeroshot_equals_transformers(tmp_path, tiny_hf, tiny):
    folder, hf = tiny_hf
    model, tok = tiny
    root = classification_wds(tmp_path / "ds", n=24, classnames=CLASSES,
                              templates=["a photo of a {c}.", "a blurry photo of the {c}.", "art of a {c}."])
    ds = load_dataset(root)
    res = evaluate_zeroshot(model, tok, ds, batch_size=5, progress=False, keep_scores=True)

    # the same thing, computed with transformers on the same pixels and kizuna's token ids
    with torch.no_grad():
        img = F.normalize(_hf_feats(hf.get_image_features(pixel_values=_pixels(model, ds))), dim=-1)
        texts = [fill_template(t, c) for c in ds.classnames for t in ds.templates]
        txt = F.normalize(_hf_feats(hf.get_text_features(input_ids=tok(texts))), dim=-1)
    w = F.normalize(txt.view(len(CLASSES), 3, -1).mean(1), dim=-1)
    scores = img @ w.T
    torch.testing.assert_close(res.scores, scores, atol=1e-5, rtol=1e-5)
    assert res.predictions.tolist() == scores.argmax(1).tolist()
    labels = torch.as_tensor(ds.labels)
    assert res.metrics["acc1"] == pytest.approx(float((scores.argmax(1) == labels).double().mean()))
    top5 = scores.topk(5, dim=1).indices
    assert res.metrics["acc5"] == pytest.approx(float((top5 == labels[:, None]).any(1).double().mean()))
    assert res.n == 24 and not res.skipped


def test_class_embeddings_match_build_classifier_and_cache(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    clear_class_cache()
    templates = ["a photo of a {c}.", "a {c}."]
    w = class_embeddings(model, tok, CLASSES, templates, batch_size=5)
    torch.testing.assert_close(w, build_classifier(model, tok, CLASSES, templates), atol=1e-6, rtol=1e-6)
    calls = []
    orig = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda *a, **k: calls.append(1) or orig(*a, **k))
    assert torch.equal(class_embeddings(model, tok, CLASSES, templates), w)  # memory hit
    assert not calls
    class_embeddings(model, tok, CLASSES, templates[:1])  # other templates: a miss
    assert calls
    # on-disk cache: written once, then read by a "new process" (empty memory cache)
    calls.clear()
    class_embeddings(model, tok, CLASSES, templates, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 1
    clear_class_cache()
    w2 = class_embeddings(model, tok, CLASSES, templates, cache_dir=tmp_path / "cache")
    assert torch.equal(w2, w) and not calls


def test_cache_invalidated_by_weight_update(tiny_hf):
    model = kizuna.create_model(str(tiny_hf[0])).eval()
    tok = kizuna.get_tokenizer(model)
    w0 = class_embeddings(model, tok, CLASSES, ["a {c}."])
    with torch.no_grad():
        for p in model.text.parameters():  # an in-place "optimizer step"
            p.add_(0.05 * torch.randn_like(p))
    w1 = class_embeddings(model, tok, CLASSES, ["a {c}."])
    assert not torch.allclose(w0, w1)
    torch.testing.assert_close(w1, build_classifier(model, tok, CLASSES, ["a {c}."]), atol=1e-6, rtol=1e-6)
    # the trainers' fused AdamW updates weights without bumping their version counters: the cache keyed on
    # those alone handed every evaluation during training the first one's class embeddings
    params = [p for p in model.text.parameters()]
    optimizer = torch.optim.AdamW(params, lr=0.05, fused=True)
    versions = [p._version for p in params]
    sum(p.square().sum() for p in params).backward()
    optimizer.step()
    assert [p._version for p in params] == versions  # what made the cache stale
    w2 = class_embeddings(model, tok, CLASSES, ["a {c}."])
    assert not torch.allclose(w1, w2)
    torch.testing.assert_close(w2, build_classifier(model, tok, CLASSES, ["a {c}."]), atol=1e-6, rtol=1e-6)


def test_metrics_per_class_and_confusion(tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    rng = torch.Generator().manual_seed(0)
    w = F.normalize(torch.randn(4, 8, generator=rng), dim=-1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    img = F.normalize(w[labels] + 0.9 * torch.randn(10, 8, generator=rng), dim=-1)
    res = classify_features(img, labels, w, ["a", "b", "c", "d"], k=2)
    pred = (img @ w.T).argmax(1)
    assert res.metrics["acc1"] == pytest.approx(float((pred == labels).double().mean()))
    assert res.metrics["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert "acc2" in res.metrics
    assert res.confusion.sum() == 10 and np.trace(res.confusion) == int((pred == labels).sum())
    assert [r["n"] for r in res.per_class] == [3, 2, 4, 1]
    assert "recall %" in res.table()
    png = res.plot_confusion(tmp_path / "cm.png")
    assert png.stat().st_size > 5000


def test_classifier_scores_add_the_loss_over_the_decoded_images():
    rng = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 3, generator=rng)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    valid = torch.tensor([True] * 7 + [False, True])  # row 7 did not decode
    res = classify_scores(logits, labels, ["x", "y", "z"], valid=valid, method="classifier")
    v = valid.nonzero().squeeze(1)
    assert res.metrics["loss"] == pytest.approx(float(F.cross_entropy(logits[v], labels[v])))
    assert res.metrics["acc1"] == pytest.approx(float((logits[v].argmax(1) == labels[v]).double().mean()))
    assert math.isnan(res.metrics["acc5"]) and res.n == 8 and int(res.predictions[7]) == -1  # 3 classes: no top-5
    assert res.summary().startswith("classifier") and "templates" not in res.summary()
    assert res.to_dict()["method"] == "classifier" and "num_templates" not in res.to_dict()
    # zero-shot results carry no loss (cosine similarities are not logits)
    assert "loss" not in classify_scores(logits, labels, ["x", "y", "z"]).metrics
    with pytest.raises(ValueError, match="9 rows of scores but 8 labels"):
        classify_scores(logits, labels[:8], ["x", "y", "z"])


def test_ties_go_to_the_lower_class_index():
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.1], [0.2, 0.2, 0.2, 0.2]])
    assert rank_classes(scores, 3).tolist() == [[1, 2, 0], [0, 1, 2]]


def test_corrupt_image_is_a_counted_skip(tmp_path, tiny):
    model, tok = tiny
    root = classification_wds(tmp_path / "c", n=8, corrupt=(3,))
    res = evaluate_zeroshot(model, tok, load_dataset(root), progress=False)
    assert res.n == 7 and res.skipped["corrupt_image"] == 1
    assert res.predictions[3] == -1 and "corrupt_image=1" in res.summary()
    assert "000000003" in res.skipped.report()


def test_a_split_with_no_usable_image_is_an_error_with_the_report(tmp_path, tiny):
    """It was a shape error deep in the classifier ("mat1 and mat2 shapes cannot be multiplied")."""
    from kizuna.eval.datasets import DatasetError

    model, tok = tiny
    root = classification_wds(tmp_path / "c", n=4, corrupt=(0, 1, 2, 3))
    with pytest.raises(DatasetError, match=r"none of its 4 images could be used: .*corrupt_image=4"):
        evaluate_zeroshot(model, tok, load_dataset(root), progress=False)


def test_a_cache_that_cannot_be_written_is_a_warning(tiny, tmp_path):
    """Raised on rank 0 alone, the error left the other ranks waiting in their next collective."""
    model, tok = tiny
    clear_class_cache()
    (tmp_path / "file").write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="could not write the class-embedding cache"):
        w = class_embeddings(model, tok, CLASSES, ["a {c}."], cache_dir=tmp_path / "file" / "cache")
    torch.testing.assert_close(w, build_classifier(model, tok, CLASSES, ["a {c}."]), atol=1e-6, rtol=1e-6)


def test_top_k_of_fewer_than_k_classes_is_nan_and_shown_as_such():
    """acc5 of a 3-class dataset was 1.0 (k clipped to the number of classes) and printed as "top-5 100.00%";
    CLIP_benchmark reports NaN there. It is null in the JSON and "-" / "n/a" in the tables."""
    import json

    from kizuna.apps.common import json_safe
    from kizuna.eval.suite import markdown_report

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    scores = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    res = classify_scores(scores, labels, ["x", "y", "z"])
    assert math.isnan(res.metrics["acc5"]) and not math.isnan(res.metrics["acc1"])
    assert "top-5 n/a" in res.summary() and "nan" not in res.summary()
    assert json.loads(json.dumps(json_safe(res.to_dict()), allow_nan=False))["metrics"]["acc5"] is None
    assert classify_scores(scores, labels, ["x", "y", "z"], k=2).metrics["acc2"] == pytest.approx(
        float((scores.topk(2).indices == labels[:, None]).any(1).double().mean()))
    assert math.isnan(classify_scores(scores, labels, ["x", "y", "z"], k=4).metrics["acc4"])
    six = classify_scores(torch.randn(6, 6), labels, list("abcdef"))
    assert 0.0 <= six.metrics["acc5"] <= 1.0  # enough classes: a number
    rec = {"dataset": "d", "model": "m", "pretrained": "p", "task": "zeroshot_classification", "language": "en",
           "metrics": {"acc1": 0.5, "acc5": float("nan"), "mean_per_class_recall": 0.5}}
    assert "| m | p | d | 50.00 | - | 50.00 |" in markdown_report([rec])  # NaN in memory, too
    assert "| m | p | d | 50.00 | - | 50.00 |" in markdown_report([json_safe(rec)])


def test_zeroshot_classifier_topk_breaks_ties_to_the_lower_index(tiny, monkeypatch):
    """probs.topk ordered five tied labels 2, 4, 3, 0, 1; rank_classes (the evaluation) orders them 0..4."""
    from kizuna.eval.zeroshot import ZeroShotClassifier

    model, tok = tiny
    clf = ZeroShotClassifier(model, tok, ["a", "b", "c", "d", "e"])
    monkeypatch.setattr(clf, "logits", lambda images: torch.full((1, 5), 3.0))  # (topk ranks the logits)
    assert [name for name, _ in clf.topk(torch.zeros(1, 3, 32, 32), k=5)[0]] == ["a", "b", "c", "d", "e"]
    assert [name for name, _ in clf.topk(torch.zeros(1, 3, 32, 32), k=2)[0]] == ["a", "b"]
    assert len(clf.topk(torch.zeros(1, 3, 32, 32), k=np.int64(2))[0]) == 2  # a numpy integer is a number
    for bad in (-1, 0, 2.5):  # -1 returned every class but the last
        with pytest.raises(ValueError, match=f"k must be a whole number >= 1.*got {bad}"):
            clf.topk(torch.zeros(1, 3, 32, 32), k=bad)


def test_zero_length_token_rows_are_named(tiny):
    """[B, 0] ids failed deep in the argmax pooling with an IndexError."""
    model, _ = tiny
    with pytest.raises(ValueError, match="T >= 1, got T = 0"):
        model.encode_text(torch.zeros(2, 0, dtype=torch.long))


def test_a_template_that_cannot_be_filled_is_named():
    """"a {} in {style}" ended in a bare KeyError: 'style' from str.format."""
    with pytest.raises(ValueError, match=r"template 'a \{\} in \{style\}' cannot be filled .*write \{c\}"):
        fill_template("a {} in {style}", "cat")
    assert fill_template("a {} in {{braces}}", "cat") == "a cat in {braces}"
    # {c} templates are filled as CLIP_benchmark fills them, template.format(c=name): doubled braces are one
    # brace (they stayed doubled, unlike the same template with {}), and another field is refused
    assert fill_template("a {c} in {{braces}}", "cat") == "a cat in {braces}" == fill_template("a {} in {{braces}}", "cat")
    assert fill_template("a {c}, a {c}", "cat") == "a {c}, a {c}".format(c="cat")
    for template in ("a {c} in {style}", "a {c} and {}", "{{c}} {c:>9}"):
        with pytest.raises(ValueError, match="cannot be filled"):
            fill_template(template, "cat")


def test_zero_shot_over_one_class_is_refused(tmp_path, tiny):
    """A CSV dataset's folder given as the dataset was read as an ImageFolder of one class: top-1 100%."""
    from _evalhelpers import image_folder

    from kizuna.eval.datasets import load_dataset

    root = image_folder(tmp_path / "d", per_class=2, classes=["imgs"])
    (root / "test.csv").write_text("filepath,title\nimgs/img0.png,a cat\n")
    with pytest.raises(ValueError, match=r"1 class \(imgs\): zero-shot needs at least two.*pass the file \(test.csv\)"):
        evaluate_zeroshot(*tiny, load_dataset(str(root)), progress=False)
