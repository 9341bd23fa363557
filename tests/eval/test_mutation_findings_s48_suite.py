"""Mutation-testing round 48 (suite and figures): what the existing tests left open in today's changes to drawn(),
the robustness scatter's place in results.md, and the linear probe's one-split check."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kizuna.eval import suite
from kizuna.eval.datasets import DatasetError
from kizuna.models.checkpoint import drawn


def test_drawn_passes_its_keywords_to_the_plot(tmp_path):
    """Kills: drawn() calling plot(path) without the keywords (a confusion matrix's model=, a plot's title=)."""
    seen = {}

    def plot(path, **kwargs):
        seen.update(kwargs)
        Path(path).write_bytes(b"png")
        return path

    assert drawn(plot, tmp_path / "a.png", "; note", model="m", title="t") == ["a.png"]
    assert seen == {"model": "m", "title": "t"}
    assert drawn(lambda path: None, tmp_path / "b.png") == []


def test_the_robustness_scatter_drawn_is_linked_from_results_md(tmp_path, monkeypatch):
    """Kills: the scatter drawn but its link left out of results.md (and the figure counted stale)."""
    def scatter(records, path):
        Path(path).write_bytes(b"png")
        return Path(path)

    monkeypatch.setattr(suite, "_robustness_scatter", scatter)
    suite.write_results([], tmp_path)
    assert "![clean vs shifted](robustness_scatter.png)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "robustness_scatter.png").exists()


def test_a_probe_test_split_inside_the_training_folder_is_another_split(tmp_path):
    """Kills: the one-split refusal made for any test split inside the training one (parts_below(...) is not None
    for == ()): only one folder, spelt two ways, is one split."""
    (tmp_path / "data" / "test").mkdir(parents=True)

    def ctx_of(train_source, test_source):
        def dataset(r, split, task, max_samples=None):
            source = train_source if split == "train" else test_source
            return SimpleNamespace(source=str(source), layout="imagefolder", split=split, labels=[0, 0, 1, 1],
                                   classnames=["a", "b"], num_classes=2, classnames_source="folder names",
                                   name="d")
        return SimpleNamespace(dataset=dataset)

    r = {"dataset": "d", "split": "test"}
    train, test = suite._probe_splits(r, ctx_of(tmp_path / "data", tmp_path / "data" / "test"))[:2]
    assert train.source == str(tmp_path / "data") and test.source == str(tmp_path / "data" / "test")
    with pytest.raises(DatasetError, match="the linear probe needs separate train and test splits"):
        suite._probe_splits(r, ctx_of(tmp_path / "data", tmp_path / "data" / "." / "test" / ".."))
