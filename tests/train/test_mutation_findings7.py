"""The trainers' outputs check before a checkpoint (what it reads, what it does when it cannot run, what a failed
evaluation saves), the "best/ starts afresh" note of a resume, numpy seeds, and the config checks of `train` and
`vit train` that a seventh mutation hunt found unchecked. Each test drives the method itself on a trainer built
with ``object.__new__`` and only the attributes the method reads (no model built, no step taken), or parses a
command line: each runs in milliseconds."""
from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


def _batch(n: int = 2) -> dict:
    return {"images": torch.zeros(n, 3, 8, 8), "captions": [f"caption {i}" for i in range(n)]}


def _bare(cls, **attrs):
    """An instance of the trainer ``cls`` without its __init__: the attributes a method under test reads."""
    tr = object.__new__(cls)
    for k, v in attrs.items():
        setattr(tr, k, v)
    return tr


# ----------------------------------------------------------------------------- what the outputs check reads
def test_the_contrastive_outputs_check_reads_the_text_features():
    """ContrastiveTrainer.outputs_finite: an inf among the text features (a text tower whose finite weights
    overflow) makes the outputs non-finite, with the image features, scale and bias finite. Kills C03
    (text_features left out of the values checked)."""
    from kizuna.train.contrastive import ContrastiveTrainer

    def model(images, **text):
        n = len(images)
        txt = torch.ones(n, 4)
        txt[0, 1] = float("inf")
        return {"image_features": torch.ones(n, 4), "text_features": txt, "logit_scale": torch.tensor(10.0),
                "logit_bias": None}

    tr = _bare(ContrastiveTrainer, model=model, device=torch.device("cpu"), autocast=contextlib.nullcontext,
               _text_inputs=lambda captions: {})
    assert ContrastiveTrainer.outputs_finite(tr, _batch()) is False
    finite = lambda images, **text: {"image_features": torch.ones(len(images), 4),  # noqa: E731
                                     "text_features": torch.ones(len(images), 4), "logit_scale": torch.tensor(10.0),
                                     "logit_bias": None}
    tr.model = finite
    assert ContrastiveTrainer.outputs_finite(tr, _batch()) is True


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["one-inf", "one-nan"])
def test_the_supervised_outputs_check_refuses_one_non_finite_logit(bad):
    """SupervisedTrainer.outputs_finite: one inf or NaN logit among finite ones (a head whose finite weights
    overflow on one image) fails the check, not only logits that are all NaN. Kills S01
    (isfinite(logits).all() -> not isnan(logits).all())."""
    from kizuna.train.supervised import SupervisedTrainer

    def model(images):
        logits = torch.zeros(len(images), 3)
        logits[1, 2] = bad
        return logits

    tr = _bare(SupervisedTrainer, model=model, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    assert SupervisedTrainer.outputs_finite(tr, _batch()) is False
    tr.model = lambda images: torch.zeros(len(images), 3)
    assert SupervisedTrainer.outputs_finite(tr, _batch()) is True


# ----------------------------------------------------------------------------- the check out of memory
def test_a_check_that_runs_out_of_memory_warns_and_the_checkpoint_is_saved_unchecked():
    """_outputs_finite_on_last_batch: the check's forward raising RuntimeError (oneDNN's or the CPU allocator's
    out of memory under `ulimit -v`) warns "saving it unchecked" and counts as finite, so _non_finite() lets the
    checkpoint be saved instead of losing the finished steps. Kills T06 (only MemoryError caught: the
    RuntimeError escapes) and T07 (the except path returning False: the weights called diverged)."""
    from kizuna.train.contrastive import ContrastiveTrainer

    def oom(batch):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")

    tr = _bare(ContrastiveTrainer, model=torch.nn.Linear(2, 2), step=7, _last_batch=_batch(),
               outputs_finite=oom, dist=SimpleNamespace(enabled=False, is_main=True), device=torch.device("cpu"))
    with pytest.warns(RuntimeWarning, match=r"at step 7 \(RuntimeError: DefaultCPUAllocator.*saving it unchecked"):
        assert tr._outputs_finite_on_last_batch() is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert tr._non_finite() is None  # nothing found wrong: the checkpoint is saved


# ----------------------------------------------------------------------------- a failed evaluation's save
def test_a_failed_evaluation_saves_nothing_when_the_finite_weights_overflow():
    """_save_after_failure (an evaluation failed after a finished step): weights that are finite but whose
    outputs on the last batch are NaN or inf are a diverged run, so nothing is saved (no checkpoint, no finish,
    which exports model/) and the caller re-raises the evaluation's own error. Kills T09 (_non_finite_weight()
    in place of _non_finite(): such weights were saved as the checkpoint to resume)."""
    from kizuna.train.contrastive import ContrastiveTrainer

    saved, lines = [], []
    tr = _bare(ContrastiveTrainer, model=torch.nn.Linear(2, 2), step=2, _last_batch=_batch(),
               outputs_finite=lambda batch: False, dist=SimpleNamespace(enabled=False, is_main=True),
               device=torch.device("cpu"), save=lambda metrics: saved.append("save"),
               finish=lambda metrics: saved.append("finish"))
    bar = SimpleNamespace(write=lambda line, file=None: lines.append(line))
    tr._save_after_failure("the evaluation", True, bar)
    assert saved == []
    assert len(lines) == 1 and "at step 2 failed, and the model's outputs on the last batch are NaN or inf" in \
        lines[0] and "nothing is saved" in lines[0]


# ----------------------------------------------------------------------------- best/ starts afresh
class _Stop(Exception):
    pass


def _resumed(tmp_path, capsys, best_value, best_restarted=None):
    """A resume whose evaluation set differs (--eval-max-samples 8, the run's 4) from a checkpoint whose best so
    far is ``best_value``: _resume's messages and the trainer. The restore stops once the evaluation set is
    compared (_non_finite_weight is the next thing it does)."""
    from kizuna.train.contrastive import ContrastiveTrainer

    def stop():
        raise _Stop

    ckpt = SimpleNamespace(load_into=lambda path, model: {"train_config": {"eval_max_samples": 4}},
                           best_value=best_value, best_restarted=best_restarted, metric=None, mode="max", abandoned=[])
    tr = _bare(ContrastiveTrainer, cfg=tiny_config(tmp_path, eval_max_samples=8), ckpt=ckpt, model=None,
               resume_from=str(tmp_path / "checkpoints" / "step_0000002"), _non_finite_weight=stop,
               dist=SimpleNamespace(enabled=False, is_main=True, rank=0, world_size=1), device=torch.device("cpu"),
               step=2, epoch=0, _say_if_precision_changed=lambda *a: None, _say_if_pixels_changed=lambda *a: None)

    def restore():
        with pytest.raises(_Stop):
            ContrastiveTrainer._restore_checkpoint(tr)
        return {"step": 2}

    tr._restore_checkpoint = restore
    capsys.readouterr()
    tr._resume()
    return tr, capsys.readouterr().err


def test_a_resume_on_another_eval_set_says_nothing_of_a_best_the_run_never_kept(tmp_path, capsys):
    """A run that keeps no best/ (no evaluation gave a best value yet) resumed on another evaluation set: no
    "best/ starts afresh" note, which named a best/ that does not exist; with a best value the note is said and
    the best value dropped. Kills T11 (`self.ckpt.best_value is not None` dropped from the condition)."""
    tr, err = _resumed(tmp_path, capsys, best_value=None)
    assert "resumed from" in err and "best/ starts afresh" not in err
    assert tr.eval_set_changed == []
    tr, err = _resumed(tmp_path / "b", capsys, best_value=0.5)
    assert "best/ starts afresh: this resume evaluates on another set (--eval-max-samples 8 (was 4))" in err
    assert tr.ckpt.best_value is None


def test_a_best_already_restarted_for_its_metric_is_not_said_twice(tmp_path, capsys):
    """A best/ restarted because the resume picks it by another metric: one note (the metric's), not the
    evaluation set's as well. Kills T12 (`not self.ckpt.best_restarted` dropped)."""
    tr, err = _resumed(tmp_path, capsys, best_value=0.5, best_restarted=("probe/shape", "max"))
    assert "evaluates on another set" not in err and tr.eval_set_changed == []


# ----------------------------------------------------------------------------- numpy seeds
def test_a_numpy_subset_seed_is_taken_as_an_int(tmp_path):
    """Trainer.start turns a numpy integer subset_seed (a notebook's `for s in np.arange(3)`) into a Python int,
    as it does the seed: numpy's own generator overflowed on seed % 2**64 and train_config.json could not write
    it. Kills T15 (only "seed" converted)."""
    from kizuna.train import trainer as trainer_mod
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    cfg = make_supervised_config(data=str(tmp_path / "data"), out=str(tmp_path / "run"), subset_fraction=0.5,
                                 subset_seed=np.int64(-3), seed=np.int64(5))

    class Started(Exception):
        pass

    def stop(*a, **k):
        raise Started

    tr = _bare(SupervisedTrainer)
    with pytest.MonkeyPatch.context() as mp:  # start() stops where the distributed set-up would begin
        mp.setattr(trainer_mod, "init_distributed", stop)
        mp.setattr(trainer_mod, "resumed_config", lambda cfg, named: (cfg, None))
        with pytest.raises(Started):
            tr.start(cfg, None)
    assert type(tr.cfg.subset_seed) is int and tr.cfg.subset_seed == -3
    assert type(tr.cfg.seed) is int and tr.cfg.seed == 5


# ----------------------------------------------------------------------------- config checks
def _train(*argv):
    from kizuna.apps.cli import build_parser
    from kizuna.train.config import config_from_args

    return config_from_args(build_parser().parse_args(["train", "--out", "/tmp/kizuna-unused-run", *argv]))


def _vit(*argv):
    from kizuna.apps.cli import build_parser
    from kizuna.train.vit_cli import config_from_args

    return config_from_args(build_parser().parse_args(["vit", "train", "--data", "/tmp/kizuna-unused-data",
                                                       "--out", "/tmp/kizuna-unused-run", *argv]))


def test_a_csv_caption_key_on_shards_is_refused():
    """--csv-caption-key names a column of a .csv/.tsv --data: on shards it does nothing and is refused. Kills
    K01 (its entry dropped from the unused-flag checks)."""
    with pytest.raises(ValueError, match=r"--csv-caption-key text does nothing here: it names a column of a "
                                         r"\.csv/\.tsv --data"):
        _train("--data", "shards/{0..3}.tar", "--csv-caption-key", "text")


def test_a_tsv_counts_as_csv_data_for_its_column_flags():
    """A .tsv --data is a CSV of tabs: --csv-image-key and --csv-caption-key apply to it. Kills K02 (only ".csv"
    counted: the flags were refused as doing nothing)."""
    cfg = _train("--data", "pairs.tsv", "--csv-image-key", "path", "--csv-caption-key", "text")
    assert (cfg.csv_image_key, cfg.csv_caption_key) == ("path", "text")


def test_vit_eval_batch_size_without_val_data_is_refused():
    """`vit train --eval-batch-size` without --val-data has nothing to evaluate: refused. Kills V01."""
    with pytest.raises(ValueError, match=r"--eval-batch-size 64 does nothing here: no --val-data to evaluate on"):
        _vit("--eval-batch-size", "64")


def test_vit_mix_prob_with_cutmix_alone_is_accepted():
    """--mix-prob applies when --cutmix alone mixes (no --mixup): accepted, not refused as unused. Kills V02
    (mixing = cfg.mixup > 0 only)."""
    cfg = _vit("--cutmix", "1.0", "--mix-prob", "0.3")
    assert (cfg.cutmix, cfg.mix_prob) == (1.0, 0.3)


def test_a_device_with_trailing_characters_is_refused():
    """--device cuda:0x is no device: the whole value must match (re.match accepted it by its prefix). Kills
    K12."""
    with pytest.raises(ValueError, match=r"--device must be auto, cpu, cuda or cuda:N, got 'cuda:0x'"):
        _train("--device", "cuda:0x")


def test_the_lowest_int64_seed_is_accepted():
    """--seed -2**63 is the range's lower end, included. Kills K16 (-2**63 < seed)."""
    assert _train("--seed", str(-2**63)).seed == -2**63


def test_a_bool_seed_from_python_is_refused():
    """make_config(seed=True): a bool is not a seed. Kills K17 (bool counted as whole)."""
    from kizuna.train.config import make_config

    with pytest.raises(ValueError, match=r"--seed must be a whole number.*, got True"):
        make_config(seed=True, out="/tmp/kizuna-unused-run")
