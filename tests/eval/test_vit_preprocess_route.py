"""A ViT loaded by path carries its checkpoint's preprocessing: evaluate_classifier, kizuna.get_preprocess and
`kizuna analyze` on the model object agree with `kizuna vit eval` (a fine-tuned CLIP tower's mean/std is OpenAI's,
not the 0.5/0.5 of a ViT trained from scratch)."""
import numpy as np
import pytest
import torch
from PIL import Image

import kizuna
from kizuna.data.transforms import Preprocess
from kizuna.eval.classification import evaluate_classifier
from kizuna.eval.datasets import load_dataset

OPENAI = {"image_size": 16, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
          "interpolation": "bicubic", "resize_mode": "shortest"}


@pytest.fixture()
def fine_tuned(tmp_path):
    """A tiny ViT saved as `kizuna vit finetune` saves one of a CLIP tower: OpenAI's mean/std beside its weights."""
    torch.manual_seed(0)
    vit = kizuna.create_vit("mu/4", image_size=16, num_classes=2, width=16, depth=1, heads=2, mlp_dim=32)
    torch.nn.init.normal_(vit.head.weight, std=1.0)  # a head of zeros scores every input alike
    path = tmp_path / "model"
    kizuna.save_model(vit, path, extra={"preprocess": OPENAI, "classnames": ["cat", "dog"]})
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog"]):
        (data / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) // (k + 1)
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    return path, data


def test_a_vit_loaded_by_path_is_evaluated_with_its_checkpoints_preprocessing(fine_tuned):
    """evaluate_classifier used mean = std = 0.5 for every ViT: a fine-tuned CLIP tower scored other losses (and
    accuracies) than `kizuna vit eval` on the same checkpoint and images."""
    path, data = fine_tuned
    model = kizuna.create_model(str(path))
    ds = load_dataset(str(data), classnames=["cat", "dog"])
    default = evaluate_classifier(model, ds, progress=False)
    explicit = evaluate_classifier(model, ds, transform=Preprocess(**OPENAI), progress=False)
    assert default.metrics["loss"] == pytest.approx(explicit.metrics["loss"], rel=1e-6)
    half = Preprocess(**{**OPENAI, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert evaluate_classifier(model, ds, transform=half, progress=False).metrics["loss"] != pytest.approx(
        default.metrics["loss"], rel=1e-4)  # the two normalisations do tell apart
    pre = kizuna.get_preprocess(model)  # refused for a ViT before: it carries no preprocessing
    assert pre.mean == pytest.approx(OPENAI["mean"]) and pre.std == pytest.approx(OPENAI["std"])


def test_saved_again_it_keeps_its_preprocessing(fine_tuned, tmp_path):
    path, _ = fine_tuned
    model = kizuna.create_model(str(path))
    kizuna.save_model(model, tmp_path / "again")
    again = kizuna.create_model(str(tmp_path / "again"))
    assert again.preprocess_config["mean"] == pytest.approx(OPENAI["mean"])
    fresh = kizuna.create_vit("mu/4", image_size=16, num_classes=2, width=16, depth=1, heads=2, mlp_dim=32)
    with pytest.raises(ValueError, match="carries no preprocessing"):  # a fresh ViT still says what to pass
        kizuna.get_preprocess(fresh)


@pytest.mark.parametrize("pos_embed", ["interpolate", "grid", "sequence"])
def test_a_fine_tune_carries_the_checkpoints_preprocessing_at_its_new_size(fine_tuned, pos_embed):
    """load_for_finetune kept the carried mean/std with pos_embed="interpolate" only (grid and sequence built a
    fresh ViT without it: the mode decided the normalisation), and at an unchanged grid kept the old image size."""
    from kizuna.train.supervised import load_for_finetune

    path, _ = fine_tuned
    vit = load_for_finetune(str(path), num_classes=3, image_size=24, pos_embed=pos_embed)
    assert vit.preprocess_config["mean"] == pytest.approx(OPENAI["mean"])
    assert vit.preprocess_config["image_size"] == vit.cfg.image_size == 24
    same_grid = load_for_finetune(str(path), num_classes=3, image_size=18)  # 18 px: still a 4x4 grid of 4-px patches
    assert same_grid.cfg.image_size == same_grid.preprocess_config["image_size"] == 18


@pytest.mark.parametrize("pos_embed", ["interpolate", "grid"])
def test_a_clip_tower_loaded_to_fine_tune_carries_clips_mean_and_std(tmp_path, pos_embed):
    """load_for_finetune of a CLIP checkpoint carried no preprocessing (only a ViT's was read): evaluate_classifier
    and save_model of the fine-tuned tower fell back to 0.5/0.5, where `kizuna vit finetune` stores CLIP's."""
    from kizuna.train.supervised import load_for_finetune, source_normalisation, vit_preprocess

    clip = kizuna.create_model("ViT-mu-8", image_size=16)
    kizuna.save_model(clip, tmp_path / "clip")
    vit = load_for_finetune(str(tmp_path / "clip"), num_classes=3, image_size=24, pos_embed=pos_embed)
    assert vit.preprocess_config == vit_preprocess(24, *source_normalisation(str(tmp_path / "clip")))
    assert vit.preprocess_config["mean"] == pytest.approx(OPENAI["mean"])
    kizuna.save_model(vit, tmp_path / "tuned")
    assert kizuna.create_model(str(tmp_path / "tuned")).preprocess_config["std"] == pytest.approx(OPENAI["std"])
