"""Config files plus command-line flags: what a run actually gets."""
import pytest

from kizuna.train.config import load_config_file, make_config
from kizuna.train.contrastive import model_config


def test_model_overrides_flag_changes_one_leaf_and_keeps_the_rest_of_the_config():
    base = load_config_file("demo")
    cfg = make_config(base, model_overrides={"vision": {"depth": 2}})
    vision, text = cfg.model_overrides["vision"], cfg.model_overrides["text"]
    assert vision["depth"] == 2
    assert vision["stem"] == base["model_overrides"]["vision"]["stem"] == "conv"
    assert vision["width"] == base["model_overrides"]["vision"]["width"]
    assert text == base["model_overrides"]["text"]
    assert base["model_overrides"]["vision"]["depth"] == 1  # the file's dict is not mutated


def test_demo_config_builds_the_hybrid_tower_it_documents():
    mc = model_config(make_config(load_config_file("demo")))
    v = mc.vision
    assert (v.stem, v.pool, v.depth, tuple(v.image_size) if not isinstance(v.image_size, int) else v.image_size) in (
        ("conv", "max", 1, 48), ("conv", "max", 1, (48, 48)))
    assert v.grid == (12, 12)
    assert v.output_dim == mc.text.output_dim == mc.embed_dim == 128


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="unknown training option.*bogus"):
        make_config({}, bogus=1)
