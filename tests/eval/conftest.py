import sys
from pathlib import Path

import pytest
import torch

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
    """Reads the class name the typographic probe wrote on each image, from the pixels the model gets: its _TextOp
    is watched and paints the image in a colour that codes the word (the attack encodes all its images in one
    pass, so the word is each image's own). ``words_of(x, model)``: the word per row of a preprocessed batch,
    None for an image nothing was written on."""
    from types import SimpleNamespace

    from PIL import Image

    from kizuna.eval import probes

    codes: dict[str, int] = {}

    class Reader(probes._TextOp):
        def __call__(self, img):
            code = codes.setdefault(self.word, len(codes))
            return Image.new("RGB", img.size, (20 * code, 123, 45))

    def words_of(x, model):
        import kizuna

        pre = kizuna.get_preprocess(model)
        mean, std = (torch.tensor(v).view(1, 3) for v in (pre.mean, pre.std))
        rgb = ((x[:, :, 0, 0].float() * std + mean) * 255).round()
        names = {c: w for w, c in codes.items()}
        return [names.get(int(r) // 20) if (int(g), int(b)) == (123, 45) and int(r) % 20 == 0 else None
                for r, g, b in rgb.tolist()]

    monkeypatch.setattr(probes, "_TextOp", Reader)
    return SimpleNamespace(words_of=words_of)


@pytest.fixture()
def colours(tmp_path) -> Path:
    """A test split of two classes (red, blue), two 16-px images each: a dataset root a suite run can name."""
    from PIL import Image

    root = tmp_path / "colours" / "test"
    for k, name in enumerate(("red", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (200 * (1 - k), 30 * i, 200 * k)).save(root / name / f"{i}.png")
    return tmp_path / "colours"
