"""Parameter-group audit (stop 45): a projection a classifier head bypasses is refused, not trained never."""
import pytest

import kizuna
from kizuna.train.supervised import check_model_overrides


def test_a_classifier_refuses_a_projection_override():
    with pytest.raises(ValueError, match="output_dim 16 is the joint-space projection"):
        check_model_overrides({"depth": 1, "output_dim": 16}, "mu/4")
    check_model_overrides({"depth": 1, "output_dim": 0}, "mu/4")


@pytest.mark.parametrize("classes", [10, 32])
def test_a_clip_image_tower_refuses_a_classifier_head(classes):
    """num_classes 32 (= embed_dim) trained the head as the projection (visual.proj never changed); 10 failed
    at the first step with a shape error."""
    with pytest.raises(ValueError, match=f"vision.num_classes {classes}: a CLIP image tower ends in its projection"):
        kizuna.create_model("ViT-mu-8", vision={"num_classes": classes})


def test_a_saved_clip_config_with_a_vision_head_still_loads():
    """Checkpoints trained so before the refusal load as they did (the refusal sat in ClipConfig itself: they,
    their resume and `vit finetune` of them all failed)."""
    from kizuna.models.clip import ClipConfig
    from kizuna.models.presets import clip_config

    d = clip_config("ViT-mu-8").to_dict()
    d["vision"]["num_classes"] = 32
    assert ClipConfig.from_dict(d).vision.num_classes == 32


def test_a_training_run_refuses_a_vision_head_override(tmp_path):
    """The trainer merges --model-overrides itself (around clip_config's check): 10 classes failed at step 1,
    32 (= embed_dim) trained with visual.proj never changing."""
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import model_config

    cfg = make_config(model="ViT-mu-8", data="synthetic", out=str(tmp_path),
                      model_overrides={"vision": {"num_classes": 10}})
    with pytest.raises(ValueError, match="vision.num_classes 10: a CLIP image tower"):
        model_config(cfg)
