"""Per-step read-backs a GPU waits for: one process decides alone, and the text tower runs first."""
import torch

import kizuna
from kizuna.train.budget import TimeBudget


def test_one_process_decides_the_limit_without_a_device_tensor():
    """time_is_up built a tensor on the device and read it back every step of a run with --time-limit-minutes
    (a GPU stall per step). On the meta device a read-back is impossible, so this fails if one is made."""
    budget = TimeBudget(limit_minutes=1e-9)
    budget.restart()
    assert budget.time_is_up(torch.device("meta"))
    assert not TimeBudget(limit_minutes=60).time_is_up(torch.device("meta"))


def test_clip_forward_runs_the_text_tower_before_the_image_tower():
    """The text tower reads values back (token check, padding trim): after the image tower that waited for all
    of its queued work on a GPU."""
    model = kizuna.create_model("ViT-mu-8").eval()
    order = []
    model.text.register_forward_pre_hook(lambda *_: order.append("text"))
    model.visual.register_forward_pre_hook(lambda *_: order.append("image"))
    tokens = kizuna.get_tokenizer(model)(["a red circle"])
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 32), tokens)
    assert order == ["text", "image"]
    assert list(out) == ["logit_scale", "logit_bias", "image_features", "text_features"]
