"""Loading a checkpoint builds the model on the meta device; the random init is skipped there."""
import subprocess
import sys

import torch

import kizuna
from kizuna.models.checkpoint import save_model


def test_loading_a_checkpoint_does_not_import_dynamo(tmp_path):
    """nn.init.normal_ on meta tensors imports torch._dynamo (about 1 s of every command that loads a model)."""
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    save_model(model, tmp_path / "m")
    code = (f"import sys, torch, kizuna\nm = kizuna.create_model({str(tmp_path / 'm')!r})\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_meta_build_then_load_equals_the_saved_model(tmp_path):
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8").eval()
    save_model(model, tmp_path / "m")
    loaded = kizuna.create_model(str(tmp_path / "m")).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.device("meta"):
        on_meta = kizuna.create_model("ViT-mu-8")
    assert all(p.is_meta for p in on_meta.parameters())
