"""The demo: a small CLIP trained from scratch on the built-in shapes world, on CPU, in minutes.

  kizuna demo                      # trains with this config, then evaluates and writes a report
  kizuna train --config demo       # the training part alone
"""


def get_config():
    return dict(
        model="ViT-mu-8",
        model_overrides={
            "embed_dim": 128,
            "vision": {"width": 128, "depth": 4, "heads": 4, "mlp_dim": 512, "patch_size": 8},
            "text": {"width": 128, "depth": 3, "heads": 4, "mlp_dim": 512},
        },
        tokenizer="train",
        tokenizer_vocab_size=1024,
        context_length=24,
        data="synthetic",
        synthetic_image_size=64,
        synthetic_length=200_000,
        batch_size=256,
        lr=1e-3,
        warmup_steps=50,
        weight_decay=0.1,
        steps=400,
        time_limit_minutes=8.0,  # keeps `make demo` within ~10 minutes on a slow or busy machine
        workers=1,
        eval_every=100,
        eval_max_samples=100,
        save_every=100,
        best_metric="probe/unseen_combos",
        out="runs/demo",
    )
