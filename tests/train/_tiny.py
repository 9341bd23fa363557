from kizuna.train.config import make_config


def tiny_config(out, **overrides):
    base = dict(model="ViT-mu-8", data="synthetic", synthetic_image_size=32, synthetic_length=512,
                batch_size=16, steps=4, workers=0, warmup_steps=2, lr=1e-3, out=str(out), progress=False,
                log_every=1, eval_max_samples=4, context_length=24, threads=1)
    base.update(overrides)
    return make_config(**base)
