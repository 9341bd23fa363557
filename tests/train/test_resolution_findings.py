"""Runs at another resolution than the default (resolution hunt, stop 44): a checkpoint's synthetic scenes."""
import pytest
from _tiny import tiny_config

import kizuna
from kizuna.train.config import NamedFields
from kizuna.train.contrastive import ContrastiveTrainer


@pytest.fixture(scope="module")
def checkpoint_32px(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model"
    kizuna.save_model(kizuna.create_model("ViT-mu-8", image_size=32), path)
    return path


def test_a_checkpoints_synthetic_scenes_are_drawn_at_its_input_size(tmp_path, checkpoint_32px):
    """From a checkpoint on --data synthetic the scenes were drawn at --synthetic-image-size (default 64) and
    resized to the model's 32 px, while its probes drew 32-px scenes; train_config.json recorded 64."""
    cfg = tiny_config(tmp_path / "run", model=str(checkpoint_32px), synthetic_image_size=64, steps=1)
    trainer = ContrastiveTrainer(cfg, named=frozenset({"model", "data"}))
    assert trainer.cfg.synthetic_image_size == 32
    assert trainer.dataset.world.image_size == 32  # drawn at it, not resized to it
    with pytest.raises(ValueError, match=r"--synthetic-image-size 96: --model .* is a checkpoint of 32-px input.*"
                                         r"drop the flag"):
        ContrastiveTrainer(tiny_config(tmp_path / "typed", model=str(checkpoint_32px), synthetic_image_size=96),
                           named=NamedFields({"model", "data", "synthetic_image_size"},
                                             typed={"model", "synthetic_image_size"}))
    # a --config file's value (an earlier run's train_config.json recorded 64, the demo's recipe says 48) gives way
    replay = ContrastiveTrainer(tiny_config(tmp_path / "replay", model=str(checkpoint_32px), synthetic_image_size=48),
                                named=NamedFields({"model", "data", "synthetic_image_size"}, typed={"model"}))
    assert replay.cfg.synthetic_image_size == 32


def test_pos_embed_without_a_new_size_is_refused_and_at_the_same_grid_warned(tmp_path):
    """`vit finetune CKPT --pos-embed grid` without --image-size was accepted and recorded, and placed no table:
    an ablation that looked as if it had run. At an --image-size of the checkpoint's own grid it says so."""
    import torch

    from kizuna.models.vit import VisionConfig, VisionTransformer
    from kizuna.train.config import refuse_unused
    from kizuna.train.supervised import SupervisedConfig, load_for_finetune, unused_flags

    cfg = SupervisedConfig(init="ckpt", image_size=0, pos_embed="grid")
    with pytest.raises(ValueError, match=r"--pos-embed grid does nothing here: .*--image-size"):
        refuse_unused(cfg, {"pos_embed"}, unused_flags(cfg))
    refuse_unused(SupervisedConfig(init="ckpt", image_size=48, pos_embed="grid"), {"pos_embed"},
                  unused_flags(SupervisedConfig(init="ckpt", image_size=48, pos_embed="grid")))
    path = tmp_path / "vit"
    kizuna.save_model(VisionTransformer(VisionConfig(image_size=16, patch_size=4, width=8, depth=1, heads=2,
                                                     num_classes=2)), path)
    with pytest.warns(UserWarning, match=r"pos_embed 'grid' does nothing: image size 17 keeps the checkpoint's 4x4"):
        vit = load_for_finetune(str(path), 2, image_size=17, pos_embed="grid")
    assert vit.pos_embed.shape == (1, 17, 8) and torch.isfinite(vit.pos_embed).all()


def test_a_resnet_stem_warns_of_resizing_only_where_its_grid_differs():
    """The ResNet stem rounds each stage up and the patches round down: at 36 px (stride 4, patch 2) the grid is
    the configured 4x4, yet the warning said the table was resized on every forward pass."""
    from kizuna.models.vit import VisionConfig

    def message(size):
        with pytest.warns(UserWarning) as seen:
            VisionConfig(image_size=size, patch_size=2, width=8, depth=1, heads=2, stem="resnet", stem_channels=[8, 16])
        return str(seen[0].message)

    assert "last 1 rows and 1 columns of the stem's 9x9 feature map are never seen" in message(36)
    assert "resized on every forward pass" in message(38)


def test_resample_pos_embed_checks_its_arguments():
    import torch

    from kizuna.models.vit import resample_pos_embed

    table = torch.randn(1, 17, 6)
    torch.testing.assert_close(resample_pos_embed(table, 8, 4), resample_pos_embed(table, (8, 8), (4, 4)))  # ints
    with pytest.raises(ValueError, match=r"old grid \(3, 3\) does not hold 16"):
        resample_pos_embed(table, 3, 3)  # the same size returned any table unchecked
    with pytest.raises(ValueError, match=r"must be \[1, tokens, dim\] or \[tokens, dim\], got \[2, 17, 6\]"):
        resample_pos_embed(torch.randn(2, 17, 6), 2, 4)
    with pytest.raises(ValueError, match="at least one row"):
        resample_pos_embed(table, (0, 4), 4)
