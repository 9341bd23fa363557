"""Python-API inputs to the data stage (stop 49)."""
import numpy as np
import pytest
from PIL import Image

import kizuna
from kizuna.data.tokenizer import train_bpe_tokenizer
from kizuna.data.transforms import to_rgb


def _quantized_logo():
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., 0] = 200
    a[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    return Image.fromarray(a, "RGBA").quantize()  # a P image with an RGBA palette and no info["transparency"]


def test_a_palette_with_alpha_is_composited_onto_white():
    img = _quantized_logo()
    assert img.mode == "P" and "transparency" not in img.info
    rgb = np.asarray(to_rgb(img))
    assert rgb[7, 0].tolist() == [255, 255, 255]  # it came out as its palette colour, (200, 0, 0)
    assert rgb[0, 0].tolist() == [200, 0, 0]


def test_the_preprocess_transform_has_its_own_mean_and_std():
    """``pp.mean[:] = ...`` on a transform changed the model's config and the normalisation save_model wrote."""
    model = kizuna.create_model("ViT-mu-8")
    before = list(model.cfg.preprocess["mean"])
    pp = kizuna.get_preprocess(model)
    pp.mean[:] = [0.5, 0.5, 0.5]
    assert model.cfg.preprocess["mean"] == before


def test_train_bpe_tokenizer_refuses_one_string():
    with pytest.raises(TypeError, match="splitlines"):
        train_bpe_tokenizer("a red circle\na blue square\n" * 50, vocab_size=600)


def test_a_palette_whose_alphas_are_all_zero_is_opaque():
    """PIL gives a TGA's 32-bit colour map an RGBA palette with the alpha bytes 0 (its header says no alpha bits):
    read as alpha, the image came out white."""
    img = Image.new("P", (2, 1))
    img.putpalette(bytes([255, 0, 0, 0, 0, 0, 255, 0]), "RGBA")
    img.putpixel((1, 0), 1)
    assert np.asarray(to_rgb(img)).tolist() == [[[255, 0, 0], [0, 0, 255]]]
