"""Interop findings (session 52): an HF export into a kizuna checkpoint folder, an export stopped between its
weights and its tokenizer, a processor whose size is not the model's, and an optimizer state that does not fit the
weights it is resumed with."""
import json

import pytest
import torch

import kizuna
from kizuna.models import convert_hf
from kizuna.models.checkpoint import CheckpointError, save_model
from kizuna.models.convert_hf import export_hf_clip, export_hf_siglip

transformers = pytest.importorskip("transformers")


def test_an_export_into_a_kizuna_checkpoint_is_refused(tmp_path):
    model = kizuna.create_model("ViT-mu-8")
    save_model(model, tmp_path / "saved")
    before = (tmp_path / "saved" / "config.json").read_bytes()
    for export in (export_hf_clip, export_hf_siglip):
        with pytest.raises(CheckpointError, match="holds a kizuna checkpoint"):
            export(kizuna.create_model("ViT-mu-8" if export is export_hf_clip else "siglip-mu-8"), tmp_path / "saved")
    assert (tmp_path / "saved" / "config.json").read_bytes() == before
    run_step = tmp_path / "step_0000006"  # a run's checkpoint: its train_state.pt beside the weights
    run_step.mkdir()
    (run_step / "train_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="holds a kizuna checkpoint"):
        export_hf_clip(model, run_step)
    export_hf_clip(model, tmp_path / "hf")
    export_hf_clip(model, tmp_path / "hf")  # an earlier HF export is no kizuna checkpoint: replaced


def test_an_export_stopped_before_its_tokenizer_leaves_no_earlier_tokenizer(tmp_path, monkeypatch):
    first = kizuna.create_model("ViT-mu-8")
    export_hf_clip(first, tmp_path / "hf")
    assert (tmp_path / "hf" / "vocab.json").is_file()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_hf, "_write_clip_tokenizer", stopped)
    with pytest.raises(KeyboardInterrupt):
        export_hf_clip(kizuna.create_model("ViT-mu-8"), tmp_path / "hf")
    left = {p.name for p in (tmp_path / "hf").iterdir()}
    assert not left & {"vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json"}
    assert "tokenizer_config.json" not in left or "CLIPTokenizer" not in (tmp_path / "hf" /
                                                                          "tokenizer_config.json").read_text()


def test_a_processor_size_other_than_the_models_is_warned(tmp_path):
    hf = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           patch_size=8, image_size=32),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16))
    hf.save_pretrained(tmp_path)
    pp = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 48},
          "crop_size": {"height": 48, "width": 48}}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pp))
    with pytest.warns(UserWarning, match=r"crop_size 48x48 is not the model's 32x32 pixels.*interpolate_pos_encoding"):
        model = kizuna.load_model(tmp_path)
    from PIL import Image

    pixels = kizuna.get_preprocess(model)(Image.new("RGB", (60, 50)))
    assert tuple(pixels.shape[-2:]) == (48, 48)  # embedded at 48 px (position embeddings resampled), as before
    pp["size"], pp["crop_size"] = {"shortest_edge": 32}, {"height": 32, "width": 32}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pp))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kizuna.load_model(tmp_path)


def test_an_optimizer_state_that_does_not_fit_the_weights_is_refused(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from _tiny import tiny_config
    from kizuna.train.contrastive import ContrastiveTrainer

    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=2, warmup_steps=1, eval_max_samples=0))
    trainer.train()
    saved = trainer.optimizer.state_dict()
    from kizuna.train.trainer import check_optimizer_state_shapes

    check_optimizer_state_shapes(trainer.optimizer, saved, tmp_path)  # its own state fits
    first = saved["param_groups"][0]["params"][0]
    moments = saved["state"][first]
    moments["exp_avg"] = torch.zeros(600, *moments["exp_avg"].shape[1:]) if moments["exp_avg"].dim() > 1 else \
        torch.zeros(600)
    with pytest.raises(ValueError, match=r"optimizer state \(exp_avg of shape \(600.*does not fit the checkpoint's "
                                         r"weights"):
        check_optimizer_state_shapes(trainer.optimizer, saved, tmp_path)
