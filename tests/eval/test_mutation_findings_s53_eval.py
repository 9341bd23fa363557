"""Mutation findings (session 53), eval: the typographic attack's font reaching the written images and its refusal's
list of names, and the class cache keyed on the prompts' token ids."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.eval.classification import _token_ids_digest, class_embeddings, clear_class_cache
from kizuna.eval.probes import _TextOp, font_for


def test_the_words_are_written_in_the_font_found_for_them():
    """Kills `return render_text(img, self.word)` in _TextOp (the font found by font_for not used: "кот" and
    "пёс" written as the same boxes)."""  # (two words of one length: as boxes, one image)
    pytest.importorskip("matplotlib")
    font = font_for(["кот", "пёс"])
    assert font is not None
    img = Image.new("RGB", (96, 96), (60, 90, 120))
    a = np.asarray(_TextOp("кот", font)(img))
    b = np.asarray(_TextOp("пёс", font)(img))
    assert not np.array_equal(a, b)


def test_the_refusal_lists_five_names_then_counts_the_rest():
    """Kills `if len(names) > 6` (the sixth name neither shown nor counted)."""
    names = [f"猫{i}" for i in range(6)]
    with pytest.raises(ValueError) as e:
        font_for(names + ["cat"])
    assert "'猫4' and 1 more" in str(e.value) and "猫5" not in str(e.value)
    with pytest.raises(ValueError) as e:
        font_for(names[:5])
    assert "more" not in str(e.value)


class _Ids:
    """A tokenizer of one config whose ids can change (as a fix to its cleaning changes them)."""

    def __init__(self, shift: int = 0):
        self.shift = shift

    def to_config(self):
        return {"kind": "ids-test", "context_length": 8}

    def __call__(self, texts):
        ids = torch.zeros(len(texts), 8, dtype=torch.long)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t[:7]):
                ids[i, j] = (ord(ch) + self.shift) % 400 + 1
        return ids


def test_token_ids_of_one_shape_key_by_their_values():
    """Kills `sha256(repr(shape))` alone in _token_ids_digest (ids changed, shape kept: the old file served)."""
    a, b = _Ids(0), _Ids(1)
    assert _token_ids_digest(a, ["a cat"]) != _token_ids_digest(b, ["a cat"])
    assert _token_ids_digest(a, ["a cat"]) == _token_ids_digest(_Ids(0), ["a cat"])
    assert _token_ids_digest(lambda p: [[1, 2]], ["a cat"]) == b"other"

    def rejects(p):
        raise ValueError("no")

    assert _token_ids_digest(rejects, ["a cat"]) == b"rejected"


def test_a_tokenizer_whose_ids_changed_gets_another_cache_file(tmp_path):
    """Kills `digest.update(_token_ids_digest(tokenizer, prompts))` dropped in class_embeddings (a tokenizer fix kept
    its config, and the file written with the old ids was served)."""
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    clear_class_cache()
    try:
        first = class_embeddings(model, _Ids(0), ["cat", "dog"], ["a {}"], cache_dir=tmp_path)
        clear_class_cache()
        second = class_embeddings(model, _Ids(5), ["cat", "dog"], ["a {}"], cache_dir=tmp_path)
    finally:
        clear_class_cache()
    assert len(list(tmp_path.glob("classes-*.pt"))) == 2
    assert not torch.allclose(first, second)


def test_a_bitmap_font_that_cannot_encode_a_name_sends_it_to_dejavu(monkeypatch):
    """Kills `(drawn := ink(c)) is not None and drawn == box` in probes._undrawn (a character Pillow's bitmap font
    cannot even encode, Cyrillic, taken as drawn: the attack wrote nothing, or failed mid-run)."""
    pytest.importorskip("matplotlib")
    from PIL import ImageFont

    from kizuna.eval import probes

    monkeypatch.setattr(probes, "default_font", lambda px: ImageFont.load_default_imagefont())
    font = font_for(["кошка", "cat"])
    assert font is not None and font.endswith("DejaVuSans.ttf")


def test_a_font_given_is_not_swapped_for_dejavu():
    """Kills `if not missing:` for `if not missing or font is not None:` in probes.font_for (a font the caller chose
    that cannot draw a name replaced by DejaVu Sans without a word, and the result's font not the one asked for)."""
    matplotlib = pytest.importorskip("matplotlib")
    import os

    cmr10 = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "cmr10.ttf")  # (Computer Modern: no Cyrillic)
    if not os.path.isfile(cmr10):
        pytest.skip("matplotlib without cmr10.ttf")
    assert font_for(["cat"], cmr10) == cmr10
    with pytest.raises(ValueError, match=r"the font .*cmr10\.ttf draws"):
        font_for(["кошка"], cmr10)
