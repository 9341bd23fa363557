"""The Python API with the inputs notebook users pass: a single string where a list goes, a numpy array of class
names, labels of -1 or past the classes, float labels, unnormalised features, a model left in train mode."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import kizuna
from kizuna.eval.classification import class_embeddings, classify_scores
from kizuna.eval.linear_probe import _matching_shots, linear_probe_from_features
from kizuna.eval.retrieval import retrieval_from_features
from kizuna.eval.zeroshot import build_classifier, encode_texts


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return kizuna.create_model("ViT-mu-8")


def test_a_single_string_is_refused_where_a_list_of_names_goes(model):
    from kizuna.analysis.report import load_target, predict_report

    tokenizer = kizuna.get_tokenizer(model)
    with pytest.raises(TypeError, match="wrap it"):
        class_embeddings(model, tokenizer, "cat", ["a photo of a {c}."], cache=False)  # was 3 classes: c, a, t
    with pytest.raises(TypeError, match="wrap it"):
        class_embeddings(model, tokenizer, ["cat", "dog"], "a photo of a {c}.", cache=False)
    with pytest.raises(TypeError, match="wrap it"):
        encode_texts(model, tokenizer, "dog")
    with pytest.raises(TypeError, match="labels must be a list"):
        predict_report(load_target(model), torch.randn(3, 32, 32), "unused", labels="dog")


def test_class_names_as_a_numpy_array_give_the_list_s_weights(model):
    tokenizer = kizuna.get_tokenizer(model)
    names = ["cat", "dog", "car"]
    torch.testing.assert_close(build_classifier(model, tokenizer, np.array(names)),  # "truth value ... ambiguous"
                               build_classifier(model, tokenizer, names))


def test_load_images_takes_one_folder_as_a_path(tmp_path):
    from kizuna.analysis.report import load_images

    for i in range(2):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    preprocess = kizuna.get_preprocess(kizuna.create_model("ViT-mu-8"))
    images, names = load_images(str(tmp_path), preprocess, max_images=4)  # "/" was indexed: system images
    assert len(images) == 2 and all(name.endswith(f"in folder {tmp_path}") for name in names)
    assert load_images(tmp_path, preprocess, max_images=4)[1] == names
    assert load_images([str(tmp_path)], preprocess, max_images=4)[1] == names


def test_classification_labels_outside_the_classes_are_refused():
    scores = torch.eye(3)[[0, 1, 2, 2]]
    with pytest.raises(ValueError, match="0..2"):
        classify_scores(scores, [0, 1, 2, -1], ["a", "b", "c"])  # -1 was a correct "c": recall 1.0 beside acc 0.75
    with pytest.raises(ValueError, match="0..2"):
        classify_scores(scores, [0, 1, 2, 3], ["a", "b", "c"])  # IndexError
    result = classify_scores(scores, [0, 1, 2, -1], ["a", "b", "c"], valid=torch.tensor([True, True, True, False]))
    assert result.metrics["acc1"] == 1.0  # an unlabelled row marked invalid is left out


def test_retrieval_refuses_captions_of_no_image_and_ranks_by_cosine():
    torch.manual_seed(0)
    img = torch.randn(20, 16) * torch.rand(20, 1) * 5  # as encode_image gives them (normalize=False)
    txt = torch.randn(40, 16) * torch.rand(40, 1) * 5 + img.repeat_interleave(2, 0) * 0.3
    t2i = np.arange(40) // 2
    unit = retrieval_from_features(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), t2i)
    raw = retrieval_from_features(img, txt, t2i)
    assert raw.metrics == unit.metrics  # dot products of unnormalised rows ranked otherwise
    orphan = t2i.copy()
    orphan[0] = -1
    with pytest.raises(ValueError, match="outside 0..19"):  # was read as a caption of the last image
        retrieval_from_features(img, txt, orphan)
    usable = torch.ones(40, dtype=torch.bool)
    usable[0] = False  # marked unusable, a caption of no image is dropped, as it always was
    dropped = retrieval_from_features(img, txt, orphan, text_valid=usable)
    assert dropped.num_texts == 39 and dropped.num_images == 20


def test_linear_probe_takes_float_labels_and_refuses_test_labels_past_the_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    y = np.repeat(np.arange(3), 20)
    x = centres[y] + rng.normal(size=(60, 8))
    as_ints = linear_probe_from_features(x, y, x, y, 3, few_shot=(2,), seeds=1)
    as_floats = linear_probe_from_features(x, y.astype(np.float64), x, y.astype(np.float64), 3, few_shot=(2,),
                                           seeds=1)  # parquet/CSV labels: numpy's bincount refused them
    assert as_floats.metrics == as_ints.metrics
    past = y.copy()
    past[past == 2] = 3
    with pytest.raises(ValueError, match="y_test.*0..2"):  # counted as errors silently
        linear_probe_from_features(x, y, x, past, 3, few_shot=(), seeds=1)
    with pytest.raises(ValueError, match="whole class indices"):
        linear_probe_from_features(x, y + 0.5, x, y, 3, few_shot=(), seeds=1)
    assert np.isnan(_matching_shots({1: [0.5], 2: [0.6]}, float("nan")))  # not inf: "zero-shot beats every probe"


def test_embed_images_of_a_model_left_in_train_mode_is_eval_mode(tmp_path):
    from kizuna.apps.embed import embed_images

    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    expected = embed_images(model, tmp_path, workers=0, progress=False)[1]
    model.train()
    model.visual.patch_dropout = 0.5
    got = embed_images(model, tmp_path, workers=0, progress=False)[1]  # dropout and patch dropout were on
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert model.training  # the caller's mode is restored


def test_the_other_functions_taking_names_refuse_a_string_or_take_one_path(model, tmp_path):
    import json

    from kizuna.analysis.report import _predicts, load_target
    from kizuna.analysis.runs import compare_runs
    from kizuna.eval.encode import encode_texts_sharded
    from kizuna.eval.zeroshot import same_prompts

    tokenizer = kizuna.get_tokenizer(model)
    with pytest.raises(TypeError, match="wrap it"):
        encode_texts_sharded(model, tokenizer, "dog")  # three texts, one per character
    with pytest.raises(TypeError, match="wrap it"):
        same_prompts(tokenizer, "aab")
    assert _predicts(load_target(model), np.array(["cat", "dog"]))  # "truth value ... ambiguous"
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 10, "val_top1": 0.5}) + "\n")
    record = compare_runs(str(run), tmp_path / "cmp")  # one folder: "/" was the first run
    assert len(record["runs"]) == 1


def test_texts_encoded_in_order_of_length_come_back_in_their_own_order(model):
    """encode_texts_sharded runs batches of like length (1.6x quicker on Flickr8k's captions): rows, validity and
    the skipped texts' numbers are the texts' own."""
    from kizuna.eval.encode import encode_texts_sharded

    tokenizer = kizuna.get_tokenizer(model)
    texts = ["a dog running on the grass beside a small lake in the morning sun", "a cat", "two birds",
             "\u00a0", "a man riding a bike down a long and winding mountain road", "a car"]

    def strict(batch):
        if any(not t.strip() for t in batch):
            raise ValueError("an empty text")
        return tokenizer(batch)

    got = encode_texts_sharded(model, strict, texts, batch_size=2)
    assert got.valid.tolist() == [True, True, True, False, True, True]
    assert "text 3" in got.skips.report()
    one_by_one = torch.cat([F.normalize(model.encode_text(tokenizer([t])).float(), dim=-1)
                            for t in texts if t.strip()])
    torch.testing.assert_close(got.features[got.valid], one_by_one, atol=1e-5, rtol=1e-5)
    lengths = []  # each batch's texts, in tokens: a batch of short ones runs short (the tower trims the padding)

    def encode(tokens):
        lengths.append(sorted(int(n) for n in (tokens != 0).sum(dim=1)))
        return model.encode_text(tokens)

    encode_texts_sharded(model, tokenizer, [t for t in texts if t.strip()], batch_size=2, encode_fn=encode)
    assert all(a[-1] <= b[0] for a, b in zip(lengths, lengths[1:])), lengths
