"""analysis/ and apps/ reviewed line by line (stop 46): compare-runs panels keyed by a cut text and runs labelled
alike, load_images raising on a named corrupt file, refusing a quoted glob of images and counting skips past its
cap, a prediction panel of top_k <= 0, embed's silence on shard folders."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import kizuna
import kizuna.analysis.figures as figures
from kizuna.analysis.report import load_images, load_target, predict_report
from kizuna.analysis.runs import compare_runs
from kizuna.data.sources import SkipCounter

sys.path.insert(0, str(Path(__file__).parent))
from _run_folders import _run  # noqa: E402


def test_panels_are_one_per_value_however_long(tmp_path, monkeypatch):
    """Values alike in their first 37 characters (model_overrides, data paths, a fine-tune's checkpoint) shared a
    panel: the key was the text cut to 40."""
    a = _run(tmp_path / "a", 0.3, {"model_overrides": {"depth": 6, "pool": "gap", "stem_channels": [64, 128]}})
    b = _run(tmp_path / "b", 0.6, {"model_overrides": {"depth": 6, "pool": "gap", "stem_channels": [64, 256]}})
    c = _run(tmp_path / "c", 0.5, {"model_overrides": {"depth": 6, "pool": "gap", "stem_channels": [64, 256]}})
    drawn = {}
    plot = figures.plot_runs
    monkeypatch.setattr(figures, "plot_runs", lambda panels, path, **kw: drawn.update(panels) or plot(panels, path,
                                                                                                      **kw))
    compare_runs([a, b, c], tmp_path / "out", panel_by="model_overrides")
    assert sorted(sorted(r["label"] for r in runs) for runs in drawn.values()) == [["a"], ["b", "c"]]
    assert all(len(title) <= len("model_overrides = ") + 40 for title in drawn)  # titles stay short


def test_runs_named_alike_are_labelled_by_their_paths(tmp_path):
    """A seed sweep's lr1e-3/seed0 and lr3e-3/seed0 were both "seed0" in the table, the legend and a group."""
    runs = [_run(tmp_path / lr / "seed0", acc, {"lr": float(lr[2:])}) for lr, acc in (("lr1e-3", 0.3),
                                                                                       ("lr3e-3", 0.6))]
    runs.append(_run(tmp_path / "other", 0.4, {"lr": 0.01}))
    numbers = compare_runs(runs, tmp_path / "out")
    assert [r["label"] for r in numbers["runs"]] == ["lr1e-3/seed0", "lr3e-3/seed0", "other"]
    assert [r["label"] for r in compare_runs(runs, tmp_path / "out2", labels=["x", "y", "z"])["runs"]] == \
        ["x", "y", "z"]


@pytest.fixture(scope="module")
def preprocess():
    return kizuna.get_preprocess("ViT-mu-8")


def test_a_named_corrupt_image_is_skipped_and_counted(tmp_path, write_noise_images, preprocess):
    write_noise_images(tmp_path, 1, 32)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    skips = SkipCounter()
    with pytest.warns(UserWarning, match="corrupt_image=1"):
        images, names = load_images([tmp_path / "im0.png", tmp_path / "bad.png"], preprocess, skips=skips)
    assert len(images) == 1 and names == [str(tmp_path / "im0.png")]
    assert skips.counts == {"corrupt_image": 1}  # it raised, though a folder's corrupt image is skipped
    with pytest.raises(ValueError, match="no readable images"):
        load_images([tmp_path / "bad.png"], preprocess)


def test_a_quoted_glob_of_images_reads_them(tmp_path, write_noise_images, preprocess):
    write_noise_images(tmp_path, 3, 32)
    images, names = load_images([str(tmp_path / "im*.png")], preprocess)  # "unsupported data source im0.png"
    assert len(images) == 3 and names == [str(tmp_path / f"im{i}.png") for i in range(3)]


def test_files_past_the_cap_are_not_counted_as_skipped(tmp_path, write_noise_images, preprocess):
    write_noise_images(tmp_path, 3, 32)
    (tmp_path / "z.png").write_bytes(b"")  # dropped while indexing: past the cap of 2, never to be read
    skips = SkipCounter()
    assert len(load_images([tmp_path], preprocess, max_images=2, skips=skips)[0]) == 2
    assert not skips
    skips = SkipCounter()
    with pytest.warns(UserWarning, match="empty_image=1"):
        assert len(load_images([tmp_path], preprocess, max_images=9, skips=skips)[0]) == 3
    assert skips.counts == {"empty_image": 1}  # read to the end, it is counted


@pytest.mark.parametrize("top_k", [0, -1])
def test_a_prediction_panel_needs_one_class_at_least(tmp_path, top_k):
    """top_k=-1 wrote every label but the last to predict.json, 0 none, while the panel drew one."""
    target = load_target(kizuna.create_model("ViT-mu-8"))
    with pytest.raises(ValueError, match="top_k must be a whole number >= 1"):
        predict_report(target, torch.randn(3, 32, 32), tmp_path, labels=["cat", "dog", "car"], top_k=top_k)


def test_embed_says_it_reads_no_shards(tmp_path):
    from kizuna.apps.embed import embed_images

    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "000000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="holds .tar shards, and embed reads image files only"):
        embed_images(kizuna.create_model("ViT-mu-8"), tmp_path)


def test_a_glob_of_images_among_other_files_reads_the_images(tmp_path, write_noise_images, preprocess):
    """A glob that also caught a caption file or a folder named like an image failed: "unsupported data source
    'im0.png'"."""
    write_noise_images(tmp_path, 2, 32)
    (tmp_path / "im0.txt").write_text("a caption")
    (tmp_path / "notes.csv").write_text("id,comment\n1,nice\n")  # no table of images: left out, as a folder's
    (tmp_path / "sub.png").mkdir()
    write_noise_images(tmp_path / "sub.png", 1, 32)
    images, names = load_images([str(tmp_path / "*")], preprocess)
    assert len(images) == 3 and names[:2] == [str(tmp_path / "im0.png"), str(tmp_path / "im1.png")]


def test_a_named_empty_file_is_counted_as_empty(tmp_path, write_noise_images, preprocess):
    write_noise_images(tmp_path, 1, 32)
    (tmp_path / "empty.png").write_bytes(b"")
    skips = SkipCounter()
    with pytest.warns(UserWarning, match="empty_image=1"):
        load_images([tmp_path / "im0.png", tmp_path / "empty.png"], preprocess, skips=skips)
    assert skips.counts == {"empty_image": 1}  # as a folder's index counts it
