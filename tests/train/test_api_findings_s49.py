"""The trainer's model after train() (stop 49)."""
import torch

from kizuna.train.contrastive import ContrastiveTrainer

from _tiny import tiny_config


def test_the_trained_model_is_left_in_eval_mode_and_trains_again(tmp_path):
    """Left in train mode, trainer.model.encode_image dropped patches at random: two calls differed."""
    tr = ContrastiveTrainer(tiny_config(tmp_path, patch_dropout=0.5, steps=3, warmup_steps=1))
    tr.train()
    assert not tr.model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tr.model.encode_image(x), tr.model.encode_image(x))


def test_train_trains_in_train_mode_whatever_mode_the_model_was_left_in(tmp_path):
    tr = ContrastiveTrainer(tiny_config(tmp_path, steps=3, warmup_steps=1))
    tr.model.eval()  # as a first train() leaves it
    modes = []  # the training steps' forwards (the evaluations run without grad, in eval mode)
    tr.model.text.register_forward_pre_hook(
        lambda module, args: modes.append(module.training) if torch.is_grad_enabled() else None)
    tr.train()
    assert len(modes) == 3 and all(modes)
