"""Held-out evaluation on the shapes world: what the CLIP papers say such a model can and cannot do."""
from __future__ import annotations

import torch

import kizuna
from kizuna.data.synthetic import evaluate_probes, make_probes


@torch.inference_mode()
def synthetic_probe_metrics(model, tokenizer, n_per_task: int = 200, seed: int = 1, batch_size: int = 256) -> dict:
    preprocess = kizuna.get_preprocess(model)
    device = next(model.parameters()).device
    size = model.image_size[0]
    probes = make_probes(seed=seed, image_size=size, n_per_task=n_per_task)

    def encode_images(images):
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([preprocess(im) for im in images[i : i + batch_size]]).to(device)
            out.append(model.encode_image(x, normalize=True).float())
        return torch.cat(out)

    def encode_texts(texts):
        out = []
        for i in range(0, len(texts), batch_size):
            out.append(model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device), normalize=True).float())
        return torch.cat(out)

    results = evaluate_probes(probes, encode_images, encode_texts)
    return {f"probe/{k}": float(v) for k, v in results.items()}
