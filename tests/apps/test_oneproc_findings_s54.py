"""Many commands in one process (stop 54's one-process hunt): each main() shows its warnings (from the third
`kizuna train` on, Python's once-per-place record hid them all); a trainer under a caller's inference_mode is one
line; a caller's float64 default dtype gives a float32 model."""
import contextlib
import io

import pytest
import torch

import kizuna
from kizuna.apps.cli import main


def test_every_main_call_shows_its_warnings(tmp_path):
    said = []
    for i in range(4):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "--model", "ViT-mu-8", "--data", "synthetic", "--synthetic-image-size", "32",
                         "--synthetic-length", "64", "--steps", "2", "--warmup-steps", "2", "--batch-size", "8",
                         "--workers", "0", "--precision", "fp32", "--threads", "1", "--no-progress",
                         "--out", str(tmp_path / str(i))]) == 0
        said.append("the warm-up (2 steps) lasts the whole run" in err.getvalue())
    assert said == [True] * 4  # (True, True, False, False)


def test_training_under_inference_mode_is_one_line(tmp_path, capsys):
    with torch.inference_mode():
        assert main(["train", "--model", "ViT-mu-8", "--data", "synthetic", "--synthetic-image-size", "32",
                     "--steps", "2", "--batch-size", "8", "--workers", "0", "--no-progress",
                     "--out", str(tmp_path / "run")]) == 2
    assert "inside torch.inference_mode()" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_float64_default_dtype_still_gives_a_float32_model(tmp_path):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = kizuna.create_model("ViT-mu-8")
        assert next(model.parameters()).dtype == torch.float32
        kizuna.save_model(model, tmp_path / "m")
        assert next(kizuna.load_model(tmp_path / "m").parameters()).dtype == torch.float32
        assert torch.get_default_dtype() == torch.float64  # (the caller's, given back)
    finally:
        torch.set_default_dtype(before)
    with pytest.raises(ValueError, match="inference_mode"):
        with torch.inference_mode():
            from kizuna.train.contrastive import ContrastiveTrainer
            from kizuna.train.config import make_config

            ContrastiveTrainer(make_config(model="ViT-mu-8", data="synthetic", out=str(tmp_path / "api")))
