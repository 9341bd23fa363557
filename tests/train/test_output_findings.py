"""What kizuna writes, read back: a run under a folder name that is not UTF-8 loads and resumes; `vit train`'s
OUT/model is swapped in whole (weights and config.json from one save); a diverged model is not exported to HF
with Infinity in its config.json; analysis JSONs name their figures relative to themselves."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import kizuna
from kizuna.models import checkpoint
from kizuna.models.checkpoint import CheckpointError, load_tensors
from kizuna.train.contrastive import ContrastiveTrainer
from kizuna.train.supervised import SupervisedTrainer

from _tiny import tiny_config  # noqa: E402
from test_supervised import _cfg, _shard


def _non_utf8_folder(tmp_path: Path) -> Path:
    folder = tmp_path / os.fsdecode(b"run_l\xe9")
    try:
        folder.mkdir()
    except (OSError, UnicodeEncodeError):  # a file system that stores names as Unicode (APFS, NTFS)
        pytest.skip("this file system refuses a name that is not UTF-8")
    return folder


def test_run_under_a_non_utf8_folder_name_loads_and_resumes(tmp_path):
    out = _non_utf8_folder(tmp_path)
    ContrastiveTrainer(tiny_config(out, steps=2, save_every=2)).train()
    latest = out / "checkpoints" / "step_0000002"
    model = kizuna.load_model(latest)  # "not a readable safetensors file (Path ... is not valid UTF-8)"
    assert model.cfg.vision.width > 0
    assert isinstance(load_tensors(latest / "train_state.pt"), dict)
    resumed = ContrastiveTrainer(tiny_config(out, steps=3, resume="latest"))  # was refused as "damaged"
    assert resumed.step == 2
    resumed.train()
    assert (out / "checkpoints" / "step_0000003").is_dir()


def test_export_of_a_diverged_model_is_refused_not_written_with_infinity(tmp_path):
    from kizuna.models.convert_hf import export_hf_clip

    model = kizuna.create_model("ViT-mu-8")
    with torch.no_grad():
        model.logit_scale.fill_(float("inf"))
    with pytest.raises(CheckpointError, match="NaN or inf.*logit_scale"):
        export_hf_clip(model, tmp_path / "hf")
    assert not (tmp_path / "hf" / "config.json").exists()


def test_vit_model_folder_is_replaced_whole(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _shard(data / "train" / "000000.tar", 0, 32)
    trainer = SupervisedTrainer(_cfg(data, tmp_path / "run", steps=2, val_data=""))
    trainer.train()
    folder = tmp_path / "run" / "model"
    before = kizuna.load_model(folder)
    assert json.loads((folder / "config.json").read_text())["kizuna"]["extra"]["step"] == 2
    with torch.no_grad():
        trainer.model.head.weight.add_(1.0)
    trainer.step = 4
    real = checkpoint.atomic_write_text

    def killed_before_config(path, text):
        if Path(path).name == "config.json":
            raise KeyboardInterrupt  # the run stopped between the weights and config.json
        real(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed_before_config)
    with pytest.raises(KeyboardInterrupt):
        trainer.export({})
    monkeypatch.undo()
    after = kizuna.load_model(folder)  # the old model whole, not new weights under the old step and metrics
    assert torch.equal(after.head.weight, before.head.weight)
    assert json.loads((folder / "config.json").read_text())["kizuna"]["extra"]["step"] == 2
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".model.")]  # no temporary left behind
    (folder.parent / ".model.left_by_a_kill").mkdir()  # a kill mid-export leaves its temporary folder
    (folder.parent / ".model.left_by_a_kill" / "model.safetensors").write_bytes(b"x" * 1000)
    trainer.export({})
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".model.")]  # removed, not kept forever
    assert torch.equal(kizuna.load_model(folder).head.weight, trainer.model.head.weight)
    assert json.loads((folder / "config.json").read_text())["kizuna"]["extra"]["step"] == 4


def test_locking_a_randomly_initialised_tower_is_said(tmp_path):
    with pytest.warns(UserWarning, match="--lock-image locks a tower of the preset ViT-mu-8, which is randomly"):
        ContrastiveTrainer(tiny_config(tmp_path / "a", steps=1, lock_image=True))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ContrastiveTrainer(tiny_config(tmp_path / "b", steps=1))  # nothing locked: nothing said


def test_embeddings_written_as_parquet_under_a_non_utf8_folder_name(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import numpy as np

    from kizuna.apps.embed import write_embeddings

    folder = _non_utf8_folder(tmp_path)
    emb = np.eye(2, 4, dtype=np.float32)
    write_embeddings(folder / "t.parquet", ["a cat", "a dog"], emb, "text")  # pyarrow took the path as UTF-8
    with open(folder / "t.parquet", "rb") as f:
        assert pq.read_table(f).column("text").to_pylist() == ["a cat", "a dog"]


def test_a_model_folder_whose_config_json_names_another_step_takes_the_weights_record(tmp_path, monkeypatch):
    """save_model writes the weights, then config.json: a kill between the two (a model saved again in place)
    paired the new weights with the old step and metrics."""
    from kizuna.models.checkpoint import save_model

    model = kizuna.create_model("ViT-mu-8")
    save_model(model, tmp_path / "m", extra={"step": 2, "metrics": {"acc": 0.1}})
    real = checkpoint.atomic_write_text

    def killed_before_config(path, text):
        if Path(path).name == "config.json":
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", killed_before_config)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tmp_path / "m", extra={"step": 4, "metrics": {"acc": 0.9}})
    monkeypatch.undo()
    from kizuna.analysis.report import read_extra

    with pytest.warns(UserWarning, match="config.json says step 2, but the weights were saved at step 4"):
        loaded = kizuna.load_model(tmp_path / "m")
    assert loaded.cfg.vision.width == model.cfg.vision.width
    with pytest.warns(UserWarning, match="the record saved with the weights is used"):
        assert read_extra(tmp_path / "m")["step"] == 4  # analysis and reports name the weights' step
    save_model(model, tmp_path / "m", extra={"step": 6})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a whole save: nothing said
        assert read_extra(tmp_path / "m")["step"] == 6


def test_a_best_write_between_checkpoints_is_priced_with_its_evaluation(tmp_path, clock, monkeypatch):
    """The budget priced evaluations and checkpoints, but not the best/ write of an evaluation between
    checkpoints: runs overran by it."""
    trainer = ContrastiveTrainer(tiny_config(tmp_path, steps=4, eval_every=2, save_every=4))
    real_best = trainer.ckpt.update_best

    def slow_best(*args, **kwargs):
        clock.now += 5.0
        return real_best(*args, **kwargs)

    took = []
    monkeypatch.setattr(trainer.ckpt, "update_best", slow_best)
    monkeypatch.setattr(trainer.budget, "evaluation_took", took.append)
    trainer.train()
    assert took[0] == pytest.approx(5.0)  # step 2: its evaluation (no clock time here) and its best/ write


def test_a_cut_off_model_file_has_no_record_rather_than_a_traceback(tmp_path):
    from kizuna.analysis.report import read_extra
    from kizuna.models.checkpoint import save_model

    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "m.safetensors", extra={"step": 3})
    assert read_extra(tmp_path / "m.safetensors")["step"] == 3
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:1000])
    assert read_extra(tmp_path / "cut.safetensors") == {}  # SafetensorError (analyze over-training, a resume)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert read_extra(tmp_path / "empty.safetensors") == {}


def test_a_resume_that_evaluates_on_another_set_starts_best_afresh(tmp_path, capsys):
    """--eval-max-samples 50 then 300 on the resume: best/ compared a 50-image top-1 with 300-image ones, and kept
    the first; train_config.json then says 300."""
    best = dict(best_metric="probe/shape")
    first = ContrastiveTrainer(tiny_config(tmp_path, steps=2, save_every=2, eval_every=2, eval_max_samples=4, **best))
    first.train()
    assert first.ckpt.best_value is not None
    same = ContrastiveTrainer(tiny_config(tmp_path, steps=3, resume="latest", eval_max_samples=4, **best))
    assert same.ckpt.best_value == first.ckpt.best_value and not same.eval_set_changed
    other = ContrastiveTrainer(tiny_config(tmp_path, steps=3, resume="latest", eval_max_samples=8, **best))
    assert other.ckpt.best_value is None
    assert [(k, old, new) for k, old, new in other.eval_set_changed] == [("eval_max_samples", 4, 8)]
    assert "best/ starts afresh: this resume evaluates on another set (--eval-max-samples 8 (was 4))" in \
        capsys.readouterr().err


def test_replaying_a_fine_tunes_saved_config_says_nothing_of_settings_it_never_set(tmp_path):
    """Its train_config.json records the loss, tokenizer, ... the checkpoint brought: a replay warned they were
    not used, though the run never set them."""
    import warnings

    from kizuna.apps.cli import build_parser
    from kizuna.models.checkpoint import save_model
    from kizuna.train.config import config_from_args

    save_model(kizuna.create_model("ViT-mu-8"), tmp_path / "start")
    from kizuna.train.config import make_config

    ContrastiveTrainer(make_config(model=str(tmp_path / "start"), data="synthetic", synthetic_length=64,
                                   batch_size=16, steps=1, workers=0, warmup_steps=0, out=str(tmp_path / "a"),
                                   progress=False, eval_max_samples=4, threads=1)).train()
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "a" / "train_config.json"),
                                      "--out", str(tmp_path / "b")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        replay = config_from_args(args)
    assert replay.model == str(tmp_path / "start") and replay.out == str(tmp_path / "b")


def test_a_set_aside_demo_report_links_its_own_figures_and_checkpoints(tmp_path):
    from kizuna.train.demo import _relink_set_aside_report

    (tmp_path / "REPORT.md.prev").write_text("results (step 20, `checkpoints/latest`), also `checkpoints/best`.\n\n"
                                             "![loss](loss.png)\n![predictions](predictions.png)\n")
    (tmp_path / "final_metrics.json.prev").write_text('{"model": "checkpoints/latest", "steps_run": 20}')
    (tmp_path / "REPORT.md").write_text("![loss](loss.png)\n")  # the new run's: untouched
    for _ in range(2):  # a second call (a third demo) changes nothing more
        _relink_set_aside_report(tmp_path)
        assert (tmp_path / "REPORT.md.prev").read_text() == (
            "results (step 20, `checkpoints.prev/latest`), also `checkpoints.prev/best`.\n\n"
            "![loss](loss.png.prev)\n![predictions](predictions.png.prev)\n")
        assert json.loads((tmp_path / "final_metrics.json.prev").read_text())["model"] == "checkpoints.prev/latest"
    assert (tmp_path / "REPORT.md").read_text() == "![loss](loss.png)\n"
