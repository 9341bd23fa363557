"""A JSON suite cannot turn TorchScript loading on alone (stop 54): its runs' "allow_jit" needs the command's
--allow-jit (run_suite's allow_jit=True) as well, and without it nothing is loaded."""
import json
import warnings

import pytest
import torch
from PIL import Image
from torch import nn

from kizuna.apps.cli import main
from kizuna.eval.suite import run_suite


@pytest.fixture()
def suite(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "imgs" / name / "1.png")
    archive = tmp_path / "evil.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(archive))
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"runs": [{"model": str(archive), "dataset": str(tmp_path / "imgs"),
                                          "task": "zeroshot", "allow_jit": True}]}))
    return path


def test_a_suite_files_allow_jit_needs_the_commands_consent(suite, tmp_path, capsys, monkeypatch):
    loaded = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loaded.append(a) or (_ for _ in ()).throw(RuntimeError("x")))
    assert main(["eval", "suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert 'run 0: "allow_jit": true lets its model load a TorchScript archive' in err and "--allow-jit" in err
    assert not loaded and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"allow_jit=True"):
        run_suite(str(suite), echo=None)
    assert not loaded
    # with the command's consent the archive is loaded (here: the fake load's error, past the refusal)
    with pytest.raises(RuntimeError, match="x"):
        main(["eval", "suite", str(suite), "--out", str(tmp_path / "out"), "--allow-jit"])
    assert loaded
