"""Mutation findings (session 50), advice: the vocabulary refusal offers --tokenizer train exactly from the smallest
BPE kizuna learns (514) up, and asks to drop text.vocab_size from --model-overrides only where it was given there;
--act is refused beside a preset named with a slash (ViT-mu/8-quickgelu) as beside its dashed name."""
from __future__ import annotations

import pytest

import kizuna
from kizuna.apps.cli import main
from kizuna.data.tokenizer import MIN_BPE_VOCAB, train_bpe_tokenizer

TEXTS = ["a cat on a mat", "a dog in the fog", "two birds on a wire"] * 4


def test_the_smallest_bpe_is_512_bytes_and_two_special_tokens():
    assert MIN_BPE_VOCAB == 514
    with pytest.raises(ValueError, match="vocab_size must be >= 514"):
        train_bpe_tokenizer(TEXTS, vocab_size=513)
    assert train_bpe_tokenizer(TEXTS, vocab_size=514).vocab_size == 514


def _vocab_refusal(tmp_path, capsys, *extra) -> str:
    assert main(["train", "--data", "synthetic", "--synthetic-image-size", "32", "--steps", "1",
                 "--out", str(tmp_path / "run"), *extra]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("size,offered", [(513, False), (514, True)])
def test_tokenizer_train_is_offered_from_the_smallest_bpe_up(tmp_path, capsys, size, offered):
    err = _vocab_refusal(tmp_path, capsys, "--model", "ViT-mu-8", "--model-overrides",
                         f'{{"text": {{"vocab_size": {size}}}}}')
    assert "vocab_size >= 49408" in err
    assert ("--tokenizer train" in err) == offered
    if offered:
        assert f"--tokenizer train --tokenizer-vocab-size {size} (and drop text.vocab_size" in err


def test_a_checkpoints_small_text_tower_is_not_told_to_drop_an_override_never_given(tmp_path, capsys):
    kizuna.save_model(kizuna.create_model("ViT-mu-8", text={"vocab_size": 1000}), tmp_path / "small")
    err = _vocab_refusal(tmp_path, capsys, "--model", str(tmp_path / "small"))
    assert "--tokenizer train --tokenizer-vocab-size 1000" in err
    assert "--model-overrides" in err  # (the way to a larger tower)
    assert "drop text.vocab_size" not in err


def test_act_beside_a_preset_named_with_a_slash_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (no folder of that name: the preset is meant)
    assert main(["info", "ViT-mu/8-quickgelu", "--act", "gelu"]) == 2
    assert "--act gelu: --act names the activation of an OpenAI-layout checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv,module,augment", [(["vit", "train", "--data", "DATA"], "kizuna.train.vit_cli", True),
                                                 (["vit", "finetune", "M", "--data", "DATA"],
                                                  "kizuna.train.vit_cli", True),
                                                 (["train", "--data", "synthetic"], "kizuna.train.cli", False)])
def test_a_gpu_out_of_memory_in_a_command_names_its_own_remedies(tmp_path, capsys, monkeypatch, argv, module,
                                                                 augment):
    import importlib

    import torch

    def out_of_memory(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.9 GiB total)")

    for name in {module, "kizuna.train.vit_cli"}:
        monkeypatch.setattr(importlib.import_module(name), "run", out_of_memory)
    (tmp_path / "data" / "a").mkdir(parents=True)
    argv = [{"DATA": str(tmp_path / "data"), "M": "ViT-mu-8"}.get(a, a) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB" in err
    assert ("--augment-on loader" in err) == augment
