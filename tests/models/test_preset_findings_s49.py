"""Model sizes and counts against the papers (stop 49)."""
import dataclasses

import torch

import kizuna
from kizuna.models.clip import ClipModel
from kizuna.models.flops import clip_text_flops, text_flops


def test_a_tower_without_a_usable_tokenizer_is_counted_at_its_own_length():
    """A 248-position HF tower with no BPE files was counted at the tokenizers' default 77: 4.9x low."""
    cfg = kizuna.clip_config("ViT-mu-8")
    cfg.text = dataclasses.replace(cfg.text, context_length=248)
    cfg.tokenizer = {"type": "unavailable", "note": "no BPE files"}
    assert clip_text_flops(cfg) == text_flops(cfg.text, 248)
    cfg.tokenizer = {"type": "clip_bpe", "context_length": 40}  # a tokenizer's own length still rules
    assert clip_text_flops(cfg) == text_flops(cfg.text, 40)


def test_siglip_b16_differs_from_the_paper_only_by_openais_vocabulary():
    """Documented (presets.py, README): SigLIP B/16 with OpenAI's BPE of 49,408 ids, not SigLIP's 32,000."""
    with torch.device("meta"):  # (shapes only)
        model = ClipModel(kizuna.clip_config("siglip-B-16"))
    extra = sum(p.numel() for p in model.parameters()) - 203_155_970  # HF SiglipConfig()'s B/16 (32,000 ids)
    assert extra == (49408 - 32000) * 768
