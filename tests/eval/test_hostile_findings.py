"""Templates and tables from a careless or hostile file: a {} template is filled as str.format fills it, but
only with the class name (a format spec ran as written: "{0:>1000000000}" took 87 s and 2.8 GB per class), and
an evaluation CSV whose quote is never closed is named (its later rows were read as one caption)."""
from __future__ import annotations

import math

import pytest

from kizuna.eval.datasets import DatasetError, load_dataset, read_templates
from kizuna.eval.zeroshot import fill_template


@pytest.mark.parametrize("template, shown", [
    ("{{}} {0:>1000000000}", "{0:>1000000000}"),
    ("a {} of {0.__class__.__mro__}", "{0.__class__.__mro__}"),
    ("a {} {!r} photo", "{!r}"),
    ("a {:{}} photo", "{:{}}"),
])
def test_a_template_runs_nothing_of_str_format_but_the_class_name(template, shown):
    with pytest.raises(ValueError, match=r"cannot be filled \(" + __import__("re").escape(shown)
                       + r" is not a place for the class name\)"):
        fill_template(template, "cat")
    with pytest.raises(DatasetError, match="other braces must be doubled"):
        read_templates([template])


def test_a_template_whose_only_braces_are_doubled_has_no_place_for_the_class_name():
    """"a photo of {{}}" filled as "a photo of {}": every class got the same prompt."""
    with pytest.raises(ValueError, match=r"no \{\} outside doubled braces"):
        fill_template("a photo of {{}}", "cat")


def test_what_str_format_filled_is_filled_alike():
    assert fill_template("a {} in {{braces}}", "cat") == "a cat in {braces}" == "a {} in {{braces}}".format("cat")
    assert fill_template("{0} and {0}", "cat") == "cat and cat" == "{0} and {0}".format("cat")
    with pytest.raises(ValueError, match=r"two \{\}, and one class name"):  # str.format: an IndexError
        fill_template("a {} and {}", "cat")
    with pytest.raises(ValueError, match=r"both \{\} and \{0\}"):  # str.format: "cannot switch ... numbering"
        fill_template("{0} and {}", "cat")
    # {c} is formatted as CLIP_benchmark formats it, template.format(c=name)
    assert fill_template("a {c} of {{x}}", "cat") == "a cat of {x}" == "a {c} of {{x}}".format(c="cat")


def test_an_evaluation_csv_whose_quote_is_never_closed_is_a_dataset_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "test.csv").write_text('filepath,title\na.jpg,a cat\na.jpg,"open quote\na.jpg,a dog\n',
                                       encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.csv: the quoted field that starts on line 3 is never closed"):
        load_dataset(tmp_path / "test.csv")


@pytest.mark.parametrize("field, value", [("max_logit_scale", math.nan), ("init_logit_scale", math.inf),
                                          ("init_logit_bias", -math.inf), ("init_logit_scale", None),
                                          ("max_logit_scale", "4.6")])
def test_a_logit_scale_that_is_no_finite_number_is_refused(field, value):
    """max_logit_scale NaN in a config.json: every zero-shot probability was NaN ("cat nan%"), in silence."""
    from kizuna import clip_config

    # (a string: by clip_config's kind check first, "must be a number")
    with pytest.raises(ValueError, match=f"{field} must be a (finite )?number"):
        clip_config("ViT-mu-8", **{field: value})
    clip_config("ViT-mu-8", max_logit_scale=None, init_logit_bias=-10.0)  # SigLIP's: no clamp, a bias


def test_a_checkpoint_whose_logit_scale_is_nan_is_named_as_such():
    """An OpenAI-layout state dict (or HF folder) with a NaN logit_scale failed as "its kizuna record does not
    describe a model this kizuna builds ... it may come from another kizuna version"."""
    import torch

    import kizuna
    from kizuna.models.checkpoint import CheckpointError
    from kizuna.models.convert_openai import kizuna_to_openai, openai_to_kizuna

    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False)
    sd["logit_scale"] = torch.tensor(float("nan"))
    with pytest.raises(CheckpointError, match=r"nan.pt: its logit_scale is nan: a diverged or damaged checkpoint"):
        openai_to_kizuna(sd, "nan.pt")
