"""Model constructors and checkpoint functions called with what their hints admit (session 51): numpy ints for
sizes, "~" paths, paths in save_model's extra."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kizuna
from kizuna.models.text import TextConfig
from kizuna.models.vit import resample_pos_embed


def test_numpy_sizes_build_a_vit_whose_config_holds_python_ints():
    vit = kizuna.create_vit("mu/4", image_size=np.int64(48), num_classes=np.int64(10))
    assert vit.head.out_features == 10
    assert type(vit.cfg.image_size) is int and type(vit.cfg.num_classes) is int
    json.dumps(vit.cfg.to_dict())
    pair = kizuna.create_vit("mu/4", image_size=(np.int64(32), np.int64(48)))
    assert pair.cfg.image_size == (32, 48) and all(type(s) is int for s in pair.cfg.image_size)


def test_numpy_sizes_in_a_text_config_become_python_ints():
    cfg = TextConfig(vocab_size=np.int64(100), context_length=np.int32(16), width=np.int64(32), depth=1,
                     heads=np.int64(2), mlp_dim=64, output_dim=np.int64(8))
    assert all(type(getattr(cfg, k)) is int for k in ("vocab_size", "context_length", "width", "heads",
                                                      "output_dim"))


def test_a_numpy_grid_resamples_position_embeddings_as_an_int_does():
    pe = torch.randn(1, 17, 8)
    torch.testing.assert_close(resample_pos_embed(pe, np.int64(8)), resample_pos_embed(pe, 8))


def test_a_checkpoint_loads_at_a_numpy_image_size(tmp_path):
    kizuna.save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m")
    model = kizuna.create_model(str(tmp_path / "m"), image_size=np.int64(48))
    assert model.visual.cfg.image_size == 48


def test_a_home_path_saves_and_loads_under_the_home_folder(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    model = kizuna.create_model("ViT-mu-8")
    kizuna.save_model(model, "~/m", extra={"data": tmp_path / "d"})
    assert (home / "m" / "config.json").exists() and not (work / "~").exists()
    from kizuna.analysis.report import read_extra

    assert read_extra(home / "m")["data"] == str(tmp_path / "d")
    for loaded in (kizuna.create_model("~/m"), kizuna.load_model("~/m"), kizuna.create_model(Path("~/m"))):
        torch.testing.assert_close(loaded.state_dict(), model.state_dict())


@pytest.mark.parametrize("mode", ["interpolate", "sequence", "grid"])
def test_adapt_pos_embed_takes_int_grids_as_resample_pos_embed_does(mode):
    from kizuna.train.supervised import adapt_pos_embed

    pe = torch.randn(1, 17, 8)
    torch.testing.assert_close(adapt_pos_embed(pe, 4, np.int64(8), mode=mode), adapt_pos_embed(pe, (4, 4), (8, 8),
                                                                                                 mode=mode))


def test_a_namedtuple_grid_is_a_pair():
    from collections import namedtuple

    from kizuna.train.supervised import adapt_pos_embed

    grid = namedtuple("Grid", "h w")
    pe = torch.randn(1, 17, 8)
    torch.testing.assert_close(adapt_pos_embed(pe, grid(4, 4), grid(8, 8)), adapt_pos_embed(pe, 4, 8))
