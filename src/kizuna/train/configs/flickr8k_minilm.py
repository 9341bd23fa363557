"""Flickr8k with the text tower locked to the pretrained MiniLM sentence encoder (LiT on the text side).

Only the image tower and the text projection train; MiniLM's caption embeddings are computed once
and cached.

  kizuna train --config flickr8k_minilm --out runs/flickr8k-minilm
"""
from kizuna.train.configs.flickr8k import get_config as flickr8k


def get_config():
    cfg = flickr8k()
    cfg.update(text_tower="minilm", lock_text=True, tokenizer="model", context_length=64,
               out="runs/flickr8k-minilm")
    cfg["model_overrides"] = {k: v for k, v in cfg["model_overrides"].items() if k != "text"}
    return cfg
