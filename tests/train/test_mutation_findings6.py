"""The code added to the trainers, the data code and the models since the fifth mutation hunt (the run folder's
checks at start, the best metric's check, config keys spelt as a flag's alias, vit's named validation split, the
run lock's folder clean-up, the lazy TensorBoard writer, the preprocess geometry checks, the environment's GEMM
choice, the OpenAI-layout shape inference), checked against what is on disk or worked out by hand: a sixth
mutation hunt found each of these unchecked."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny import tiny_config  # noqa: E402


def _odd_even(root: Path) -> Path:
    """ROOT/{train,test}/000000.tar of 8-px PNGs labelled odd/even (12 and 4 samples), ROOT/classnames.txt."""
    from _labelled import odd_even_splits

    return odd_even_splits(root)


# ----------------------------------------------------------------------------- the run folder, at start
def test_an_out_under_a_link_to_nothing_is_refused_as_such(tmp_path):
    """check_run_folder's check_writable: an --out inside a symbolic link to a missing folder (an unmounted disk) is
    refused naming the link; without it the lock's mkdir failed as "[Errno 17] File exists: 'link'". Kills the
    check_writable call dropped."""
    from kizuna.train.contrastive import ContrastiveTrainer

    (tmp_path / "link").symlink_to(tmp_path / "unmounted")
    with pytest.raises(ValueError, match=r"link is a symbolic link to .*unmounted, which does not exist"):
        ContrastiveTrainer(tiny_config(tmp_path / "link" / "run"))
    assert not (tmp_path / "unmounted").exists()


# ----------------------------------------------------------------------------- --best-metric
def test_the_trainer_itself_refuses_a_best_metric_its_evaluations_do_not_give(tmp_path):
    """check_config calls check_best_metric: a synthetic run (probe metrics only) with --best-metric zeroshot/top1
    is refused when the trainer is built. Kills the call dropped from check_config."""
    from kizuna.train.contrastive import ContrastiveTrainer

    with pytest.raises(ValueError, match=r"--best-metric zeroshot/top1: this run's evaluations give probe/\.\.\."):
        ContrastiveTrainer(tiny_config(tmp_path / "run", best_metric="zeroshot/top1"))


def test_synthetic_data_with_a_zeroshot_folder_gives_no_probe_metrics():
    """The synthetic probes run on synthetic data only when no --eval-zeroshot folder replaces them: a probe/...
    best metric then names nothing the run gives. Kills `and not cfg.eval_zeroshot` dropped."""
    from kizuna.train.config import make_config
    from kizuna.train.contrastive import check_best_metric

    with pytest.raises(ValueError, match=r"this run's evaluations give zeroshot/\.\.\. metrics"):
        check_best_metric(make_config(data="synthetic", eval_zeroshot="some/folder", best_metric="probe/shape"))
    check_best_metric(make_config(data="synthetic", eval_zeroshot="some/folder", best_metric="zeroshot/top5"))


# ----------------------------------------------------------------------------- config keys spelt as an alias
def test_an_unknown_key_is_named_as_written_not_as_a_field_the_config_lacks():
    """An alias is read as its field only where the config has that field: `eval_data` (vit's val_data) in a
    contrastive config, `caption_column` (csv_caption_key) in a ViT config are unknown as written. Kills the
    `if field not in fields: continue` dropped (the error named val_data / csv_caption_key, which the user never
    wrote)."""
    from kizuna.train.config import make_config
    from kizuna.train.supervised import make_supervised_config

    with pytest.raises(ValueError, match=r"unknown training option\(s\): eval_data$"):
        make_config(eval_data="x")
    with pytest.raises(ValueError, match=r"unknown ViT training option\(s\): caption_column$"):
        make_supervised_config(caption_column="x")


def test_a_config_files_alias_key_is_typed_as_its_field(tmp_path):
    """typed_file_values reads `"hflip": "0.5"` as aug_hflip's float (and crop_scale as its tuple). Kills the
    alias step dropped from typed_file_values (the key came back as written, a string)."""
    from kizuna.train.config import TrainConfig, load_config_file

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"hflip": "0.5", "crop_scale": [0.5, 1.0], "num_workers": "3"}))
    assert load_config_file(str(path), TrainConfig) == {"aug_hflip": 0.5, "aug_scale": (0.5, 1.0), "workers": 3}


# ----------------------------------------------------------------------------- vit train's data and validation splits
def test_a_named_val_split_beside_a_split_folder_reads_that_splits_images(tmp_path):
    """`--val-data ROOT/test --val-split train` validates on ROOT/train (12 samples), not on ROOT/test (4): for
    validation no split is the default one. Kills load_validation's default_split=None turned to "train"."""
    from kizuna.train.supervised import load_validation, make_supervised_config

    root = _odd_even(tmp_path / "oe")
    cfg = make_supervised_config(data=str(root / "train"), val_data=str(root / "test"), val_split="train")
    vindex, names, _ = load_validation(cfg, ["odd", "even"])
    assert len(vindex) == 12 and names == ["odd", "even"]
    cfg = make_supervised_config(data=str(root / "train"), val_data=str(root / "test"))
    assert len(load_validation(cfg, ["odd", "even"])[0]) == 4


def test_a_missing_training_split_advises_the_data_split_flag(tmp_path):
    """The training data's DatasetError advises --data-split (the reader's own advice is `kizuna eval`'s --split).
    Kills the caller flag swapped for --val-split."""
    from kizuna.eval.datasets import DatasetError
    from kizuna.train.supervised import SupervisedTrainer, make_supervised_config

    root = _odd_even(tmp_path / "oe")
    cfg = make_supervised_config(data=str(root / "test"), data_split="nosuch", model="mu/4", image_size=8, steps=1,
                                 batch_size=4, workers=0, out=str(tmp_path / "run"), progress=False)
    with pytest.raises(DatasetError, match="has no split 'nosuch'.*pass --data-split test,") as e:
        SupervisedTrainer(cfg)
    assert "--val-split" not in str(e.value) and "--split" not in str(e.value).replace("--data-split", "")


# ----------------------------------------------------------------------------- the run lock
def test_the_lock_file_stays_with_a_folder_that_holds_the_runs_work(tmp_path):
    """release_run_lock removes the lock file only from a folder holding nothing else (a refused run's): one with
    the run's files keeps it, so a run starting later locks the same file. Kills the alone-check dropped."""
    from kizuna.train.checkpointing import RUN_LOCK, hold_run_lock, release_run_lock

    key = hold_run_lock(tmp_path / "run")
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    release_run_lock(key)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(["metrics.jsonl", RUN_LOCK])


def test_a_folder_the_run_did_not_make_keeps_its_lock_file(tmp_path):
    """Only a folder the run made is emptied again: an OUT the user made beforehand keeps the lock file (and
    stays). Kills `held[2] is not None` dropped from release_run_lock (the lock file went)."""
    from kizuna.train.checkpointing import RUN_LOCK, hold_run_lock, release_run_lock

    (tmp_path / "mine").mkdir()
    release_run_lock(hold_run_lock(tmp_path / "mine"))
    assert [p.name for p in (tmp_path / "mine").iterdir()] == [RUN_LOCK]


# ----------------------------------------------------------------------------- the demo's final evaluation
def test_a_sigterm_in_the_demos_final_evaluation_says_where_the_model_is(tmp_path, monkeypatch, capsys):
    """SIGTERM (Terminated) in the ~45 s of final probes is said as a Ctrl-C there is: the model is saved, REPORT.md
    is not written. Kills Terminated dropped from the except (it went on without a word). The trainer is a stand-in:
    only the demo's code after training runs."""
    from types import SimpleNamespace

    import kizuna.train.contrastive as contrastive
    import kizuna.train.evaluation as evaluation
    from kizuna.apps.cli import Terminated
    from kizuna.train.demo import _train_and_report

    class Trained:
        run_outputs = ()
        stopped_by = None
        step = 4

        def __init__(self, cfg):
            self.model, self.tokenizer = SimpleNamespace(eval=lambda: "model"), "tokenizer"

        def train(self):
            return {}

    def terminated(*a, **k):
        raise Terminated

    monkeypatch.setattr(contrastive, "ContrastiveTrainer", Trained)
    monkeypatch.setattr(evaluation, "synthetic_probe_metrics", terminated)
    cfg = SimpleNamespace(out=str(tmp_path / "demo"), progress=False)
    with pytest.raises(Terminated):
        _train_and_report(SimpleNamespace(probe_size=1), cfg)
    err = capsys.readouterr().err
    assert f"interrupted in the final evaluation; the trained model is saved in {cfg.out}/checkpoints/latest" in err
    assert "REPORT.md was not written" in err and not (tmp_path / "demo" / "REPORT.md").exists()


# ----------------------------------------------------------------------------- TensorBoard
@pytest.fixture
def event_files_in_order(monkeypatch):
    """Event files are read in name order, whose last part is a per-process counter: reset, so that the writers
    opened here sort in the order they were opened."""
    from tensorboard.summary.writer import event_file_writer

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(0))


def test_a_drop_after_with_the_writer_open_purges_the_later_events(tmp_path, event_files_in_order):
    """drop_after on a logger whose writer is open closes it, to open it again with the purge step: TensorBoard
    then shows step 3 once, with its new value. Kills `self.tb = None` dropped from drop_after (torch reopened the
    closed writer without the purge step: step 3 twice)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kizuna.train.logging import MetricLogger

    logger = MetricLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log(step, {"loss": float(step)})
    logger.drop_after(2)
    logger.log(3, {"loss": 0.5})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 2.0), (3, 0.5)]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


# ----------------------------------------------------------------------------- preprocess geometry and normalisation
@pytest.mark.parametrize("field, value, message", [
    ("mean", [True, 0.5, 0.5], "mean must be 3 numbers"),  # a bool is no pixel mean (float(True) is 1.0)
    ("image_size", True, "image_size must be a whole number"),  # True is 1 pixel to isinstance(int)
    ("image_size", [True, 32], "image_size must be a whole number"),
    ("image_size", [32, 32, 3], "image_size must be a whole number"),  # three sizes are no [height, width]
    ("image_size", b"  ", "image_size must be a whole number"),  # bytes iterate as ints (32, 32)
    ("crop_pct", 0.0, r"crop_pct must be in \(0, 1\], got 0.0"),  # a crop of nothing
])
def test_preprocess_geometry_edges_are_refused(field, value, message):
    """Kills the bool exclusions dropped (mean, image_size), len == 2 weakened to >= 2, the str/bytes exclusion of
    a pair dropped, and 0 < crop_pct weakened to 0 <=."""
    from kizuna.data.transforms import Preprocess

    with pytest.raises(ValueError, match=message):
        Preprocess(**{field: value})


def test_the_edges_that_are_numbers_pass():
    from kizuna.data.transforms import Preprocess

    assert Preprocess(crop_pct=1.0, image_size=[24, 32], mean=[0, 0.5, 1]).image_size == [24, 32]


# ----------------------------------------------------------------------------- the GEMM library from the environment
def test_kizuna_gemm_is_read_without_case_or_spaces(monkeypatch, recwarn):
    """KIZUNA_GEMM=" MKL " forces mkl on a CPU whose own choice is onednn, without a warning. Kills the .strip()
    dropped (" mkl" was warned about and ignored)."""
    from kizuna.models import layers

    monkeypatch.setenv("KIZUNA_GEMM", " MKL ")
    assert layers._gemm_default(vendor="AuthenticAMD", onednn=True) == "mkl"
    monkeypatch.delenv("KIZUNA_GEMM")
    assert layers._gemm_default(vendor="AuthenticAMD", onednn=True) == "onednn"
    assert not [w for w in recwarn if "KIZUNA_GEMM" in str(w.message)]


def test_an_empty_row_count_in_the_environment_is_the_default_without_a_warning(monkeypatch, recwarn):
    """KIZUNA_MKL_MIN_ROWS="" (set but empty, as `VAR= kizuna ...` leaves it) is unset, not a bad value. Kills the
    empty check dropped (int("") warned "is no row count")."""
    from kizuna.models import layers

    for empty in ("", "  "):
        monkeypatch.setenv("KIZUNA_MKL_MIN_ROWS", empty)
        assert layers._env_rows("KIZUNA_MKL_MIN_ROWS", 512) == 512
    monkeypatch.setenv("KIZUNA_MKL_MIN_ROWS", " 64 ")
    assert layers._env_rows("KIZUNA_MKL_MIN_ROWS", 512) == 64
    assert not [w for w in recwarn if "KIZUNA_MKL_MIN_ROWS" in str(w.message)]


# ----------------------------------------------------------------------------- OpenAI-layout state dicts
def test_a_one_dimensional_projection_is_a_checkpoint_error_not_a_traceback():
    """A text_projection of one dimension failed with an IndexError while the architecture was inferred. Kills
    IndexError dropped from the caught exceptions."""
    import kizuna
    from kizuna.models.checkpoint import CheckpointError
    from kizuna.models.convert_openai import kizuna_to_openai, openai_to_kizuna

    sd = kizuna_to_openai(kizuna.create_model("ViT-mu-8"), strict=False)
    sd["text_projection"] = sd["text_projection"][0]
    with pytest.raises(CheckpointError, match=r"<state dict>: cannot infer the architecture from the tensor shapes"):
        openai_to_kizuna(sd)
