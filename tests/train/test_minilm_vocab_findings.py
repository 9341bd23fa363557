"""--text-tower minilm with text overrides, and --tokenizer-vocab-size without --tokenizer train: settings that were
accepted, recorded in train_config.json (and the checkpoint's config.json) and did nothing. Config-level checks only."""
from __future__ import annotations

import json
import warnings

import pytest

from kizuna.apps.cli import main
from kizuna.train.config import TrainConfig, load_config_file, make_config
from kizuna.train.contrastive import model_config

TEXT = {"depth": 1, "width": 48, "heads": 2}


def _made(base=None, **flags):
    """make_config's config and the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = make_config(base, **flags)
    return cfg, [str(w.message) for w in caught]


def _replay(tmp_path, **saved) -> TrainConfig:
    """A run's own train_config.json (it records precision_used) given back as --config, as the CLI reads it."""
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({**TrainConfig().to_dict(), "precision_used": "fp32", **saved}))
    return load_config_file(str(path), TrainConfig)


# ----- A. --text-tower minilm builds MiniLMTextTower(embed_dim) from none of the text fields ------------------------
def test_text_overrides_asked_for_with_the_minilm_tower_are_refused_naming_both_flags(capsys):
    with pytest.raises(ValueError, match=r"--model-overrides text\.depth, text\.heads, text\.width: --text-tower minilm"):
        make_config(text_tower="minilm", model_overrides={"text": TEXT})
    # the command line's, over a config file that carries its own (flickr8k's from-scratch tower): only its own named
    with pytest.raises(ValueError, match=r"--model-overrides text\.depth: --text-tower minilm"):
        make_config(load_config_file("flickr8k"), text_tower="minilm", tokenizer="model",
                    model_overrides={"text": {"depth": 1}})
    # the fields the MiniLM tower sets itself still pass
    cfg = make_config(text_tower="minilm", model_overrides={"text": {"kind": "minilm", "output_dim": 64}})
    assert cfg.model_overrides["text"] == {"kind": "minilm", "output_dim": 64}
    # the repro's command line: one error before any data is read, no traceback
    assert main(["train", "--text-tower", "minilm", "--model-overrides", json.dumps({"text": TEXT}),
                 "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--text-tower minilm" in err and "--model-overrides text.depth" in err


def test_a_train_config_built_without_make_config_is_refused_by_model_config():
    with pytest.raises(ValueError, match=r"--model-overrides text\.depth.*--text-tower minilm"):
        model_config(TrainConfig(text_tower="minilm", model_overrides={"text": {"depth": 1}}))


def test_a_config_files_text_overrides_are_dropped_with_the_minilm_tower_and_every_bundled_config_still_makes(tmp_path):
    # flickr8k carries the from-scratch text tower's fields: with --text-tower minilm they are dropped with a
    # warning, and the recorded config says what runs (its vision overrides stay)
    cfg, said = _made(load_config_file("flickr8k"), text_tower="minilm", tokenizer="model")
    assert "text" not in cfg.model_overrides and cfg.model_overrides["vision"]["stem"] == "conv"
    assert any("text.depth" in s and "--text-tower minilm" in s for s in said), said
    # an old minilm run's train_config.json that recorded ignored text overrides still replays, without them
    cfg, said = _made(_replay(tmp_path, text_tower="minilm", model_overrides={"text": TEXT}))
    assert cfg.text_tower == "minilm" and cfg.model_overrides == {} and said
    # the bundled configs as they are: no refusal, and flickr8k_minilm needs no dropping
    cfg, said = _made(load_config_file("flickr8k_minilm"))
    assert cfg.text_tower == "minilm" and "text" not in cfg.model_overrides and not said
    for name in ("flickr8k", "demo"):
        assert _made(load_config_file(name))[0].model_overrides["text"]["depth"] == 3


# ----- B. --tokenizer-vocab-size is read only by --tokenizer train --------------------------------------------------
def test_a_vocab_size_without_tokenizer_train_is_refused_naming_both_flags():
    for tokenizer in ({}, {"tokenizer": "clip_bpe"}):
        with pytest.raises(ValueError, match=r"--tokenizer-vocab-size 1000 .*--tokenizer train"):
            make_config(tokenizer_vocab_size=1000, **tokenizer)
    assert make_config(tokenizer="train", tokenizer_vocab_size=1000).tokenizer_vocab_size == 1000
    assert make_config(tokenizer_vocab_size=TrainConfig.tokenizer_vocab_size).tokenizer == "model"  # the default: fine


def test_a_vocab_size_below_the_bpe_floor_is_refused_up_front_naming_the_flag():
    # it failed only after the data was indexed, as "vocab_size must be >= 514", naming no flag
    for size in (500, 0, 513):
        with pytest.raises(ValueError, match=rf"--tokenizer-vocab-size must be >= 514 .*got {size}"):
            make_config(tokenizer="train", tokenizer_vocab_size=size)
    assert make_config(tokenizer="train", tokenizer_vocab_size=514).tokenizer_vocab_size == 514


def test_a_runs_own_train_config_still_replays_and_a_files_unused_vocab_size_is_recorded_as_the_default(tmp_path):
    cfg, said = _made(_replay(tmp_path))  # --tokenizer model, the default recorded
    assert cfg.tokenizer_vocab_size == TrainConfig.tokenizer_vocab_size and not said
    cfg, said = _made(_replay(tmp_path, tokenizer="train", tokenizer_vocab_size=1024))  # a used value
    assert (cfg.tokenizer, cfg.tokenizer_vocab_size) == ("train", 1024) and not said
    # demo's 1024 under another tokenizer, or an old run's that recorded an unused value: the default, said
    cfg, said = _made(load_config_file("demo"), tokenizer="clip_bpe")
    assert cfg.tokenizer_vocab_size == TrainConfig.tokenizer_vocab_size
    assert any("tokenizer_vocab_size 1024" in s for s in said), said
    cfg, said = _made(_replay(tmp_path, tokenizer_vocab_size=1000))
    assert cfg.tokenizer_vocab_size == TrainConfig.tokenizer_vocab_size and said


def test_the_two_text_fields_the_minilm_tower_sets_are_refused_with_other_values():
    """text.kind and text.output_dim passed the check (the tower sets them) whatever their value: kind "transformer"
    or output_dim 77 was recorded in train_config.json and overwritten without a word."""
    with pytest.raises(ValueError, match=r"text\.kind 'transformer' contradicts --text-tower minilm"):
        make_config(text_tower="minilm", model_overrides={"text": {"kind": "transformer"}})
    cfg = make_config(text_tower="minilm", model_overrides={"embed_dim": 32, "text": {"output_dim": 77}})
    with pytest.raises(ValueError, match=r"text\.output_dim 77: .* embed_dim \(32\)"):
        model_config(cfg)
    agreeing = make_config(text_tower="minilm", model_overrides={"embed_dim": 32, "text": {"output_dim": 32}})
    assert model_config(agreeing).text.output_dim == 32
