"""Two flags that set one thing (stop 49): the refusals name both and what to type; the model's-own values pass."""
import pytest


import kizuna
from kizuna.apps.cli import main
from kizuna.models.checkpoint import save_model
from kizuna.train.config import make_config
from kizuna.train.contrastive import model_config, refuse_settings_a_checkpoint_fixes


@pytest.mark.parametrize("base, typed, message", [
    # on top of a recipe: the demo's --context-length 24 replaced the override's 64, recorded in train_config.json
    ({"context_length": 24}, {"model_overrides": {"text": {"context_length": 64}}},
     r"text.context_length 64 disagrees with --context-length 24 \(set by the config\).*--context-length 64"),
    ({}, {"context_length": 24, "model_overrides": {"tokenizer": {"context_length": 40}}},
     r"tokenizer.context_length 40 disagrees with --context-length 24, which"),
    ({"tokenizer": "train"}, {"model_overrides": {"text": {"vocab_size": 3000}}},
     r"text.vocab_size 3000: with --tokenizer train \(set by the config\).*--tokenizer-vocab-size 3000"),
    ({}, {"loss": "siglip", "model_overrides": {"loss": "clip"}}, r"loss 'clip' disagrees with --loss siglip"),
    # a tokenizer the flags make replaces the override's whole (its length became the tower's, or MiniLM's 64)
    ({}, {"tokenizer": "clip_bpe", "model_overrides": {"tokenizer": {"context_length": 16}}},
     r"tokenizer \{\"context_length\": 16\}: --tokenizer clip_bpe makes the tokenizer.*--context-length 16"),
    ({}, {"text_tower": "minilm", "model_overrides": {"tokenizer": {"context_length": 128}}},
     r"--text-tower minilm makes the tokenizer"),
])
def test_an_override_a_flag_replaces_is_refused_naming_both(base, typed, message):
    with pytest.raises(ValueError, match=message):
        make_config(base={"model": "ViT-mu-8", **base}, **typed)


def test_an_override_that_agrees_with_the_flag_builds_that_model():
    cfg = make_config(model="ViT-mu-8", context_length=24, loss="clip",
                      model_overrides={"text": {"context_length": 24}, "loss": "clip"})
    mcfg = model_config(cfg)
    assert mcfg.text.context_length == 24 and mcfg.loss == "clip"


def test_a_config_files_augmentation_on_synthetic_data_is_set_back_with_a_note():
    """"drop the flag(s)" named --aug-scale and --aug-hflip, which nobody typed (`--config flickr8k --data
    synthetic`); typed, they are still refused."""
    with pytest.warns(UserWarning, match="the config's aug_scale, aug_hflip are not used on --data synthetic"):
        cfg = make_config(base={"aug_scale": (0.5, 1.0), "aug_hflip": 0.5}, data="synthetic")
    defaults = make_config()
    assert (cfg.aug_scale, cfg.aug_hflip) == (defaults.aug_scale, defaults.aug_hflip)
    with pytest.raises(ValueError, match="--aug-hflip: the synthetic scenes"):
        make_config(data="synthetic", aug_hflip=0.5)


def test_eval_every_without_an_evaluation_on_files_is_refused(tmp_path, capsys):
    """Recorded and never evaluated (`vit train` refused the same flag without --val-data)."""
    (tmp_path / "shards").mkdir()
    code = main(["train", "--data", str(tmp_path / "shards"), "--eval-every", "2", "--out", str(tmp_path / "run"),
                 "--print-config"])
    assert code == 2
    assert "--eval-every 2 does nothing here" in capsys.readouterr().err


def test_a_probe_best_metric_on_files_advises_the_probes():
    from kizuna.train.contrastive import check_best_metric

    with pytest.raises(ValueError, match="pass --eval-zeroshot synthetic"):
        check_best_metric(make_config(data="/some/shards", best_metric="probe/unseen_combos"))


def test_the_models_own_values_are_what_a_checkpoint_gives(tmp_path):
    """--loss model, --tokenizer model, --context-length 0, --text-tower model were refused with a checkpoint
    --model as flags that "would be ignored"."""
    ckpt = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    own = dict(loss="model", tokenizer="model", context_length=0, text_tower="model")
    refuse_settings_a_checkpoint_fixes(make_config(model=str(ckpt), **own), frozenset(own))
    with pytest.raises(ValueError, match="--loss would be ignored"):
        refuse_settings_a_checkpoint_fixes(make_config(model=str(ckpt), loss="siglip"), frozenset({"loss"}))


def test_probes_contradiction_is_said_before_the_missing_dataset(tmp_path, capsys):
    ckpt = save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    assert main(["eval", "probes", "--model", str(ckpt), "--no-robustness", "--severities", "1"]) == 2
    assert "--no-robustness switches off" in capsys.readouterr().err


def test_no_pos_interp_without_a_new_size_is_named(tmp_path, capsys):
    vit = kizuna.models.vit.VisionTransformer(kizuna.models.vit.VisionConfig(
        image_size=16, patch_size=8, width=16, depth=1, heads=2, mlp_dim=32, num_classes=2))
    ckpt = save_model(vit, tmp_path / "vit")
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
    code = main(["vit", "finetune", str(ckpt), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ft"),
                 "--no-pos-interp", "--print-config"])
    assert code == 2
    assert "--no-pos-interp does nothing here" in capsys.readouterr().err



def test_a_loss_override_that_agrees_with_the_flag_brings_the_papers_scale_and_bias():
    """`--loss siglip` with {"loss": "siglip"} in --model-overrides was refused as "needs a logit bias"."""
    mcfg = model_config(make_config(model="ViT-mu-8", loss="siglip", model_overrides={"loss": "siglip"}))
    assert mcfg.loss == "siglip" and mcfg.init_logit_bias == -10.0 and mcfg.max_logit_scale is None
    assert model_config(make_config(model="ViT-mu-8", loss="siglip")).to_dict() == mcfg.to_dict()
