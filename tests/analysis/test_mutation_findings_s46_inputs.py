"""Mutation testing of stop 46's analysis changes (compare_runs' panels, load_images' reading of named specs):
branches no test reached."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import kizuna
import kizuna.analysis.figures as figures
from kizuna.analysis.report import load_images
from kizuna.analysis.runs import compare_runs

sys.path.insert(0, str(Path(__file__).parent))
from _run_folders import _run  # noqa: E402


def test_values_alike_but_in_their_cut_middles_keep_a_panel_each(tmp_path, monkeypatch):
    """Two values whose shortened titles are the same text (they differ only in the middle the title cuts): the
    second panel replaced the first under the one title, and its runs were drawn nowhere."""
    start, end = "data/" + "x" * 30, "y" * 30 + "/shards"
    a = _run(tmp_path / "a", 0.3, {"data": start + "AAAA" + end})
    b = _run(tmp_path / "b", 0.6, {"data": start + "BBBB" + end})
    drawn = {}
    plot = figures.plot_runs
    monkeypatch.setattr(figures, "plot_runs", lambda panels, path, **kw: drawn.update(panels) or plot(panels, path,
                                                                                                      **kw))
    compare_runs([a, b], tmp_path / "out", panel_by="data")
    assert len(drawn) == 2
    assert sorted(r["label"] for runs in drawn.values() for r in runs) == ["a", "b"]


@pytest.fixture(scope="module")
def preprocess():
    return kizuna.get_preprocess("ViT-mu-8")


def test_a_pattern_naming_no_image_is_explained_by_the_index(tmp_path, preprocess):
    """A glob that caught only captions: build_index says what it cannot read, not "no readable images"."""
    (tmp_path / "a.txt").write_text("a caption")
    (tmp_path / "b.txt").write_text("another")
    with pytest.raises(ValueError, match="unsupported data source"):
        load_images([str(tmp_path / "*.txt")], preprocess)


def test_an_image_too_large_named_is_counted_as_too_large(tmp_path, write_noise_images, preprocess):
    """Named directly, a decompression bomb is skipped as a folder's is: counted as image_too_large, not corrupt."""
    import sys
    from pathlib import Path

    from kizuna.data.sources import SkipCounter

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from _shards import bomb_png

    write_noise_images(tmp_path, 1, 32)
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    skips = SkipCounter()
    with pytest.warns(UserWarning, match="image_too_large=1"):
        load_images([tmp_path / "im0.png", tmp_path / "bomb.png"], preprocess, skips=skips)
    assert skips.counts == {"image_too_large": 1}


def test_a_glob_over_images_leaves_a_table_beside_them_out_and_a_glob_of_tables_reads_them(tmp_path,
                                                                                            write_noise_images,
                                                                                            preprocess):
    """A .csv among the images a pattern names is left out, as a folder's reading leaves it (a notes.csv without an
    image column failed the whole command); a pattern that names no image is a spec as written (its tables read)."""
    (tmp_path / "elsewhere").mkdir()
    write_noise_images(tmp_path / "elsewhere", 1, 32)
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_noise_images(folder, 2, 32)
    (folder / "more.csv").write_text(f"filepath,title\n{tmp_path / 'elsewhere' / 'im0.png'},a photo\n")
    assert len(load_images([str(folder / "*")], preprocess)[0]) == 2
    assert len(load_images([str(folder / "*.csv")], preprocess)[0]) == 1


def test_a_named_file_that_cannot_be_read_is_counted_as_a_read_error(tmp_path, write_noise_images, preprocess,
                                                                      monkeypatch):
    """Any OSError reading a named image (permission denied, an I/O error), not only a file gone: skipped and
    counted as a folder's unreadable file is."""
    import kizuna.data.images as images
    from kizuna.data.sources import SkipCounter

    write_noise_images(tmp_path, 2, 32)
    load = images.load_image

    def unreadable(path, *args, **kwargs):
        if str(path).endswith("im1.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(images, "load_image", unreadable)
    skips = SkipCounter()
    with pytest.warns(UserWarning, match="read_error=1"):
        loaded, names = load_images([tmp_path / "im0.png", tmp_path / "im1.png"], preprocess, skips=skips)
    assert names == [str(tmp_path / "im0.png")] and skips.counts == {"read_error": 1}


def test_true_is_no_top_k(tmp_path):
    """A bool is an int to isinstance: top_k=True listed one class as if 1 had been asked."""
    import torch

    from kizuna.analysis.report import load_target, predict_report

    target = load_target(kizuna.create_model("ViT-mu-8"))
    with pytest.raises(ValueError, match="top_k must be a whole number >= 1"):
        predict_report(target, torch.randn(3, 32, 32), tmp_path, labels=["cat", "dog", "car"], top_k=True)
