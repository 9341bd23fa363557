"""Held-out evaluation on the shapes world: what the CLIP papers say such a model can and cannot do."""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

import kizuna
from kizuna.data.synthetic import evaluate_probes, make_probes
from kizuna.eval.encode import NonFiniteFeatures, check_finite


def diverged_metrics(error: NonFiniteFeatures, keys: Iterable[str]) -> dict[str, float]:
    """The metrics of a model that gave NaN or inf outputs (a diverged run): ``error`` warned about and every one
    of ``keys`` NaN, as :func:`kizuna.eval.training.evaluate_for_training` does for the dataset evaluations. A NaN
    is never best/ (the checkpoint manager skips it); a number computed from NaN outputs was (argmax of NaN is
    index 0: the share of class 0 beat a real model)."""
    warnings.warn(str(error), stacklevel=3)
    return {k: float("nan") for k in keys}


@torch.inference_mode()
def synthetic_probe_metrics(model, tokenizer, n_per_task: int = 200, seed: int = 1, batch_size: int = 256,
                            progress: bool = False) -> dict:
    """The shapes-world probes' zero-shot accuracies (``probe/<task>``). ``progress``: a bar over the probes'
    images (the demo's 500 scenes a task took ~45 s on 2 CPU cores with nothing on the screen)."""
    from kizuna.eval.encode import progress_bar

    preprocess = kizuna.get_preprocess(model)
    device = next(model.parameters()).device
    size = model.image_size[0]
    probes = make_probes(seed=seed, image_size=size, n_per_task=n_per_task)
    bar = progress_bar(total=sum(len(p.images) for p in probes.values()), desc="probes", enabled=progress,
                       unit="image")

    def encode_images(images):
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([preprocess(im) for im in images[i : i + batch_size]]).to(device)
            out.append(model.encode_image(x, normalize=True).float())
            bar.update(len(x))
        return _finite(torch.cat(out), "synthetic probes: images")

    def encode_texts(texts):
        out = []
        for i in range(0, len(texts), batch_size):
            out.append(model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device), normalize=True).float())
        return _finite(torch.cat(out), "synthetic probes: texts")

    try:
        with bar:
            results = evaluate_probes(probes, encode_images, encode_texts)
    except NonFiniteFeatures as e:  # every probe NaN; its names from the same probes scored on stand-in features
        def zeros(items):
            return torch.zeros(len(items), 1)

        return diverged_metrics(e, (f"probe/{k}" for k in evaluate_probes(probes, zeros, zeros)))
    return {f"probe/{k}": float(v) for k, v in results.items()}


def _finite(features: torch.Tensor, what: str) -> torch.Tensor:
    """``features``, refused (:class:`NonFiniteFeatures`) where a row holds NaN or inf: scored anyway, a diverged
    model's NaN similarities made every argmax the first candidate, chance-level numbers and no warning."""
    check_finite(features, None, what)
    return features
