"""Counterexamples a property-based search found in pure helpers (stop 49)."""
import json
import random

import numpy as np
import pytest
import torch

from kizuna.analysis.position import position_similarity
from kizuna.apps.common import json_safe
from kizuna.data.columns import PackedCaptions, PackedStrings
from kizuna.data.tar_index import parse_label
from kizuna.data.transforms import TrainTransform
from kizuna.eval.classification import classify_scores


def test_packed_columns_take_negative_rows_as_a_list_indexes():
    """take([-1]) glued every row into one string ('abbccc'); PackedCaptions failed on negative dimensions."""
    strings = PackedStrings(["a", "bb", "ccc"])
    assert list(strings.take([-1, 0, -3])) == ["ccc", "a", "a"]
    assert list(PackedCaptions([("x",), ("y", "z")]).take([-1, 0])) == [("y", "z"), ("x",)]
    with pytest.raises(IndexError, match="outside a column of 3 rows"):
        strings.take([3])
    with pytest.raises(IndexError):
        strings.take([-4])


def test_a_label_side_car_with_underscores_or_other_digits_is_a_bad_label():
    assert parse_label("1_0") == -2  # int() read it as 10
    assert parse_label("\u0663") == -2  # an Arabic-Indic three, read as 3
    assert parse_label(" 7 ") == 7 and parse_label("3.0") == 3


def test_a_huge_float_label_is_named_as_itself():
    with pytest.raises(ValueError, match="got 1e\\+20"):
        classify_scores(torch.randn(3, 3), np.array([0, 1, 1e20]), ["a", "b", "c"])


def test_json_safe_writes_numpy_booleans():
    assert json.loads(json.dumps(json_safe({"ok": np.bool_(True), "no": np.bool_(False)}))) == {"ok": True, "no": False}


def test_position_similarity_takes_a_numpy_side_and_refuses_a_bool():
    pos = torch.randn(17, 8)
    assert torch.equal(position_similarity(pos, np.int64(4)), position_similarity(pos, 4))
    with pytest.raises(TypeError, match="whole numbers"):
        position_similarity(pos, True)


def test_the_crop_fallback_keeps_a_pixel():
    box = TrainTransform(image_size=8, scale=(1.0, 1.0), ratio=(2.0, 4.0)).crop_box(1, 1, random.Random(0))
    assert box[2] > box[0] and box[3] > box[1]
