"""Data-side functions called with what their hints admit (session 51)."""
import random
import typing

from PIL import Image

import kizuna
from kizuna.data.augment import RandAugment
from kizuna.data.tokenizer import TextTokenizer, get_tokenizer, load_tokenizer, tokenizer_from_config


def test_randaugment_takes_its_ops_as_a_generator_or_one_name():
    aug = RandAugment(2, 9.0, ops=(o for o in ("rotate", "color")))
    assert aug.ops == ("rotate", "color")
    aug(Image.new("RGB", (16, 16)), random.Random(0))  # (an empty range for randrange before)
    assert RandAugment(1, 5.0, ops="rotate").ops == ("rotate",)


def test_train_transform_overrides_replace_the_models_settings():
    model = kizuna.create_model("ViT-mu-8")
    t = kizuna.get_preprocess(model, train=True, image_size=64, mean=(0.5, 0.5, 0.5), interpolation="bilinear")
    assert (t.image_size, tuple(t.mean), t.interpolation) == (64, (0.5, 0.5, 0.5), "bilinear")
    assert t(Image.new("RGB", (40, 30))).shape == (3, 64, 64)


def test_the_tokenizer_factories_promise_what_every_tokenizer_has():
    for f in (get_tokenizer, load_tokenizer, tokenizer_from_config):
        assert typing.get_type_hints(f)["return"] is TextTokenizer
    from kizuna.models.minilm import MiniLMTokenizer

    for tok in (get_tokenizer("clip_bpe", 16), MiniLMTokenizer(16)):
        for name in ("__call__", "to_config", "context_length"):
            assert hasattr(tok, name), (type(tok).__name__, name)
