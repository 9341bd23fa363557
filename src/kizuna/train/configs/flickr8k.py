"""CLIP from scratch on Flickr8k (6,091 training images x 5 captions), CPU budget ~30 minutes.

Run from the repository root (the shared data sits beside it in ../shared):

  kizuna train --config flickr8k --out runs/flickr8k
  kizuna train --config flickr8k --loss siglip --out runs/flickr8k-siglip
  kizuna train --config flickr8k_minilm --out runs/flickr8k-minilm
"""
import os

SHARED = os.environ.get("KIZUNA_SHARED", "../shared")


def get_config():
    return dict(
        model="ViT-mu-8",
        model_overrides={
            "embed_dim": 256,
            "vision": {"image_size": 64, "patch_size": 8, "width": 192, "depth": 6, "heads": 3, "mlp_dim": 768},
            "text": {"width": 192, "depth": 4, "heads": 3, "mlp_dim": 768},
        },
        tokenizer="train",
        tokenizer_vocab_size=4096,
        context_length=32,
        data=f"{SHARED}/data/flickr8k/train",
        aug_scale=(0.7, 1.0),
        aug_hflip=0.5,
        batch_size=256,
        lr=1e-3,
        warmup_steps=100,
        weight_decay=0.2,
        steps=1200,
        workers=1,
        eval_every=300,
        eval_retrieval=f"{SHARED}/data/flickr8k",
        best_metric="retrieval/text_to_image_R@10",
        save_every=300,
        out="runs/flickr8k",
    )
