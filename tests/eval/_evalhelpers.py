"""Tiny datasets (CLIP_benchmark layouts) and a tiny HF CLIP for the evaluation tests."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["cat", "dog", "car"]


def noise_image(i: int, size: int = 32, fmt: str = "PNG") -> bytes:
    """A distinct image per i (smooth noise, so a random ViT gives well-separated features)."""
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def classification_wds(root: Path, n: int = 12, split: str = "test", labels=None, classnames=CLASSES,
                       shards: int = 2, corrupt: tuple[int, ...] = (), names: str = "padded",
                       templates: list[str] | None = ("a photo of a {c}.", "a picture of the {c}."),
                       write_classnames: bool = True, seed: int = 0) -> Path:
    """root/split/{000000..}.tar with KEY.png + KEY.cls; classnames.txt + templates in root."""
    labels = list(labels) if labels is not None else [i % len(classnames) for i in range(n)]
    per = -(-n // shards)
    for s in range(shards):
        members = []
        for i in range(s * per, min((s + 1) * per, n)):
            key = f"{i:09d}"
            data = b"\x89PNG\r\n\x1a\n garbage" if i in corrupt else noise_image(seed * 1000 + i)
            members += [(f"{key}.cls", str(labels[i]).encode()), (f"{key}.png", data)]
        name = f"{s:06d}.tar" if names == "padded" else f"{s}.tar"
        write_tar(root / split / name, members)
    (root / split / "nshards.txt").write_text(str(shards))
    if write_classnames:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def retrieval_wds(root: Path, n: int = 10, split: str = "test", captions_per_image=(5, 3, 1, 2),
                  corrupt: tuple[int, ...] = ()) -> Path:
    members = []
    words = ["red", "blue", "green", "small", "large", "dog", "cat", "car", "tree", "house", "boat", "bird"]
    rng = np.random.default_rng(0)
    for i in range(n):
        key = f"{i:09d}"
        k = captions_per_image[i % len(captions_per_image)]
        caps = [" ".join(["a"] + list(rng.choice(words, size=3))) + f" number {i}" for _ in range(k)]
        data = b"\xff\xd8\xff garbage" if i in corrupt else noise_image(500 + i, fmt="JPEG")
        members += [(f"{key}.jpg", data), (f"{key}.txt", "\n".join(caps).encode())]
    write_tar(root / split / "000000.tar", members)
    (root / split / "nshards.txt").write_text("1")
    (root / "dataset_type.txt").write_text("retrieval")
    return root


def image_folder(root: Path, per_class: int = 3, classes=("golden_retriever", "tabby_cat")) -> Path:
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (d / f"img{i}.png").write_bytes(noise_image(100 * c + i))
    return root


def save_tiny_hf_clip(folder: Path, seed: int = 0):
    """A random-init transformers.CLIPModel (vision 64 wide/2 layers/patch 8/image 32, text 64 wide/2
    layers, vocab 49408), saved with save_pretrained; returns the HF model."""
    import torch
    import transformers

    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(folder)
    return model
