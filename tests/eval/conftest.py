import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """(folder, transformers.CLIPModel): a tiny random CLIP saved with save_pretrained."""
    pytest.importorskip("transformers")
    from _evalhelpers import save_tiny_hf_clip

    folder = tmp_path_factory.mktemp("tiny_hf_clip")
    hf = save_tiny_hf_clip(folder)
    return folder, hf


@pytest.fixture(scope="session")
def tiny(tiny_hf):
    """(kizuna model, tokenizer) loaded from the tiny HF folder (do not modify it in a test)."""
    import kizuna

    model = kizuna.create_model(str(tiny_hf[0])).eval()
    return model, kizuna.get_tokenizer(model)


@pytest.fixture(autouse=True)
def _one_thread():
    """The evaluation tests run many tiny matmuls; on 2 shared cores a second OpenMP thread costs
    ~15 ms per op in wake-ups (it is usually busy with someone else's work). One thread per test."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def typographic_word(monkeypatch):
    """A dict whose "word" is the class name the typographic probe last wrote on an image (its _TextOp watched)."""
    from kizuna.eval import probes

    current = {}

    class Reader(probes._TextOp):
        def __call__(self, img):
            current["word"] = self.word
            return super().__call__(img)

    monkeypatch.setattr(probes, "_TextOp", Reader)
    return current
