"""A ViT from scratch on CIFAR-10 (the 25,000 training images of ../shared) in 30 minutes on 2 CPU cores.

Run from the repository root (the shared data sits beside it in ../shared; elsewhere set KIZUNA_SHARED to it):

  kizuna vit train --config vit_cifar10 --out runs/c10-vit
  kizuna analyze all runs/c10-vit/model --images ../shared/data/cifar10/test --max-images 64 --out fig/c10

The length is planned by the time budget (kizuna.train.budget): after the warm-up the trainer times its
steps and sizes the cosine schedule to end within `time_budget_minutes`. docs/RESULTS.md has the runs.
"""
from kizuna.train.configs import shared_folder


def get_config():
    SHARED = shared_folder()
    return dict(
        # 0.68 M parameters: 8x8 patches of 4 px, width 96, depth 6. Wider or deeper models see fewer
        # epochs in the same 30 minutes and ended lower (docs/VIT.md); width 192 at this lr did not
        # leave chance in its first 1,800 steps (docs/RESULTS.md).
        model="mu/4",
        model_overrides={"width": 96, "depth": 6, "heads": 3, "mlp_dim": 384},
        image_size=32,
        data=f"{SHARED}/data/cifar10/train",
        val_data=f"{SHARED}/data/cifar10/test",
        batch_size=128,
        lr=2e-3,
        warmup_steps=200,
        weight_decay=0.05,
        label_smoothing=0.1,
        randaug_ops=2,
        randaug_magnitude=5,
        time_budget_minutes=27.0,  # training and its evaluations; indexing, the last checkpoint and export add ~1 min
        threads=2,
        workers=1,
        eval_every=400,
        save_every=400,
        out="runs/c10-vit",
    )
