"""Code no test ran (found by running the suite under coverage and driving each untested line)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import kizuna
from kizuna.data.transforms import Preprocess, TrainTransform, center_crop


@pytest.mark.parametrize("field, value, message", [
    ("mean", [0.5, 0.5], r"mean must be 3 numbers, one per RGB channel, got \[0.5, 0.5\]"),
    ("std", [0.5] * 4, "std must be 3 numbers"),
    ("mean", ["0.5", "0.5", "0.5"], "mean must be 3 numbers"),
    ("mean", "0.5", "mean must be 3 numbers"),
    ("resize_mode", "stretch", "resize_mode must be one of shortest, squash, got 'stretch'"),
    ("interpolation", "lanczos", "interpolation must be one of bicubic, bilinear, nearest, got 'lanczos'"),
    ("crop_pct", None, r"crop_pct must be in \(0, 1\], got None"),
    ("crop_pct", True, r"crop_pct must be in \(0, 1\]"),
    ("image_size", [32], r"image_size must be a whole number of pixels or \[height, width\], got \[32\]"),
    ("image_size", "32", "image_size must be a whole number"),
    ("image_size", 0, "image_size must be a whole number"),
])
def test_a_preprocess_config_is_checked_field_by_field(field, value, message):
    """Unchecked, a hand-edited config.json failed at the first image as a reshape, KeyError or IndexError
    traceback, read "32" as 3 x 2 pixels, or (resize_mode) ran another preprocessing without a word."""
    with pytest.raises(ValueError, match=message + r".*config\.json"):
        Preprocess(**{field: value})


def test_a_training_transform_checks_its_size_and_filter_too():
    with pytest.raises(ValueError, match="interpolation must be one of"):
        TrainTransform(interpolation="lanczos")
    with pytest.raises(ValueError, match="mean must be 3 numbers"):
        TrainTransform(mean=[0.5])
    assert Preprocess(image_size=(32, 48), crop_pct=0.875).image_size == (32, 48)  # a pair is fine
    assert Preprocess(image_size=np.int64(32)).image_size == 32  # as a numpy reader gives it
    assert list(Preprocess(image_size=np.array([32, 28])).image_size) == [32, 28]  # (review)


def test_a_model_whose_config_holds_a_bad_resize_mode_is_refused(tmp_path):
    path = kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["kizuna"]["config"]["preprocess"]["resize_mode"] = "stretch"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="resize_mode must be one of shortest, squash"):
        kizuna.get_preprocess(kizuna.create_model(str(path)))


def test_get_preprocess_without_a_model_gives_the_training_transform_when_asked():
    """`get_preprocess(None, train=True, hflip=0.5)` gave the evaluation transform, dropping both; the same
    defaults as a dict gave a TrainTransform."""
    got = kizuna.get_preprocess(None, train=True, hflip=0.5)
    assert isinstance(got, TrainTransform) and got.hflip == 0.5
    assert type(kizuna.get_preprocess(None)) is type(kizuna.get_preprocess({})) is Preprocess


def test_encode_batch_of_one_string_says_what_to_call():
    """"texts must be a str or a list of str, got str" refused a str by the rule it stated."""
    tok = kizuna.get_tokenizer("clip_bpe")
    with pytest.raises(TypeError, match="texts must be a list of str, got str; for one text use encode"):
        tok.encode_batch("a cat")
    assert tok.encode_batch(["a cat"]) == [tok.encode("a cat")]


def test_center_crop_pads_a_small_image_without_scaling_it():
    """ImageOps.pad scaled a 10x5 image up to fill 20x20 first (200 image pixels, not 50)."""
    crop = np.asarray(center_crop(Image.new("RGB", (10, 5), (255, 255, 255)), 20))
    assert crop.shape == (20, 20, 3)
    assert int((crop.sum(-1) > 0).sum()) == 50
    rows, cols = np.nonzero(crop.sum(-1))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 11, 5, 14)  # centred


def test_concat_keeps_where_each_part_rejected_samples(tmp_path):
    """SampleIndex.concat dropped rejected_at: a count over the first N then covered every part's rejections."""
    from kizuna.data.sources import SampleIndex, _Builder

    def part(keys_and_captions):
        b = _Builder()
        sid = b.source("folder", str(tmp_path))
        for key, caption in keys_and_captions:
            if caption:
                b.add(sid, key, 0, 1, key, (caption,), -1)
            else:
                b.reject("missing_caption", key)
        return b.build()

    a = part([("a0", "x"), ("a1", None), ("a2", "y")])
    b = part([("b0", None), ("b1", "z")])
    joined = SampleIndex.concat([a, b])
    assert joined.keys == ["a0", "a2", "b1"]
    assert joined.rejected_at["missing_caption"].tolist() == [1, 2]  # after a0; after a0 and a2
    assert joined.skips.counts["missing_caption"] == 2
