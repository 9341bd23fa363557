"""Mutation finding (session 51) on ``python_int``: numpy integers become Python ints, but a bool stays a bool, so
the configs' checks still refuse it (True is no layer count, no class count)."""
import numpy as np
import pytest

from kizuna.models.layers import python_int
from kizuna.models.text import TextConfig
from kizuna.models.vit import VisionConfig


def test_python_int_leaves_a_bool_a_bool():
    assert python_int(True) is True and python_int((np.int64(2), False)) == (2, False)
    assert type(python_int((np.int64(2), False))[1]) is bool


@pytest.mark.parametrize("make, match", [
    (lambda: TextConfig(depth=True), "text depth must be a positive int, got True"),
    (lambda: TextConfig(context_length=True), "text context_length must be a positive int, got True"),
    (lambda: VisionConfig(num_classes=True), r"vision num_classes must be a positive int \(or 0/None for none\), "
                                             "got True"),
    (lambda: VisionConfig(depth=True), "vision depth must be a positive int, got True"),  # (built one block)
    (lambda: VisionConfig(heads=True, width=768), "vision heads must be a positive int, got True"),
], ids=["text-depth", "text-context", "vision-num-classes", "vision-depth", "vision-heads"])
def test_a_bool_size_is_still_refused_by_the_config(make, match):
    """``num_classes=True`` (a flag passed where a count was meant): refused by name, not built as 1 class."""
    with pytest.raises(ValueError, match=match):
        make()
