"""Docs as a spec (hunt, stop 45): a CLIP processor file with a crop but no size resizes as transformers does,
and a template with a format spec is told what it holds."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from kizuna.models.checkpoint import CheckpointError


def _photos():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((300, 400), (260, 230))]


def test_a_crop_without_a_size_takes_clips_default_short_side():
    """transformers resizes the short side to 224 (CLIPImageProcessor's default), then crops; kizuna resized
    straight to the crop (a 336-px model's image embedding at cosine 0.92 of transformers')."""
    import transformers

    from kizuna.data.transforms import Preprocess
    from kizuna.models.convert_hf import preprocess_from_hf

    pp = {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 160, "width": 160},
          "do_center_crop": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.CLIPImageProcessor(crop_size=pp["crop_size"])(images=_photos(),
                                                                             return_tensors="pt")["pixel_values"]
    ours = Preprocess(**preprocess_from_hf(dict(pp), "clip", 160))
    torch.testing.assert_close(torch.stack([ours(im) for im in _photos()]), theirs, atol=2e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match=r"224 \(transformers' default: the file gives no size\) is smaller"):
        preprocess_from_hf({**pp, "crop_size": {"height": 336, "width": 336}}, "clip", 336)


@pytest.mark.parametrize("template", ["a {c!r}", "a {c:>9}", "a {0.x}"])
def test_a_template_with_a_format_spec_is_told_what_it_holds(template):
    from kizuna.eval.zeroshot import fill_template

    with pytest.raises(ValueError, match="is not a place for the class name"):
        fill_template(template, "cat")
