"""A model's config.json edited to an absurd depth is refused before the model is built (building is linear in
depth, on the meta device too: 10^6 blocks ran for half an hour), kizuna's and a Hugging Face folder's alike; an HF
model_type of the wrong type is one line."""
import json
import time

import pytest

import kizuna
from kizuna.models.checkpoint import CheckpointError, load_model, save_model


def test_a_kizuna_config_edited_to_an_absurd_depth_is_refused_at_once(tmp_path):
    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    record = json.loads(config.read_text())
    record["kizuna"]["config"]["vision"]["depth"] = 10**6
    config.write_text(json.dumps(record))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"describes 1000002 blocks \(depth\) but the checkpoint holds \d+ tensors"):
        load_model(tmp_path / "m")
    assert time.perf_counter() - start < 20
    record["kizuna"]["config"]["vision"]["depth"] = 3  # within the count: the width/shape check says what is missing
    config.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(tmp_path / "m")


def test_an_hf_folder_with_an_absurd_depth_or_a_list_model_type_is_one_line(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, vocab_size=49408),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16), projection_dim=16)
    transformers.CLIPModel(cfg).save_pretrained(tmp_path / "hf")
    config = tmp_path / "hf" / "config.json"
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "vision_config": {**saved["vision_config"], "num_hidden_layers": 10**6}}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"describes 1000001 blocks"):
        load_model(tmp_path / "hf")
    assert time.perf_counter() - start < 20
    config.write_text(json.dumps({**saved, "model_type": ["clip"]}))
    with pytest.raises(CheckpointError, match=r"model_type \['clip'\] is not supported"):
        load_model(tmp_path / "hf")
