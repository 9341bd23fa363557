import os
import signal
import sys
from pathlib import Path

import pytest
import torch

# A suite started in the background by a non-interactive shell (`make test &` in a script, nohup) inherits SIGINT
# ignored, and Python leaves it so: the tests of Ctrl-C handling, here and in the processes they start, need it live.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Tests run on 2 CPU cores; more threads only add contention between pytest and BLAS, and under pytest-xdist
# (`make test`: a process per core) between the test processes too.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))))

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers shared across the folders (_labelled); --import-mode=importlib
SHARED = Path(os.environ.get("KIZUNA_SHARED", REPO.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"real data not found at {SHARED}/data (set KIZUNA_SHARED to its location)")
    return SHARED


@pytest.fixture(scope="session")
def caption_corpus() -> list[str]:
    """Real English text that ships with kizuna: CLIP_benchmark's class names under their templates."""
    import json
    from importlib import resources

    assets = resources.files("kizuna.data").joinpath("assets")
    names = json.loads(assets.joinpath("en_classnames.json").read_text(encoding="utf-8"))
    templates = json.loads(assets.joinpath("en_zeroshot_classification_templates.json").read_text(encoding="utf-8"))
    return [t.replace("{c}", c) for key in sorted(names) for c in names[key]
            for t in templates.get(key, ["a photo of a {c}."])[:3]]


def train_spiece(corpus: list[str], add_dummy_prefix: bool = False) -> bytes:
    """A small sentencepiece unigram model laid out as SigLIP's (pad 0, </s> 1, <unk> 2; SigLIP's has no
    dummy prefix), trained here on ``corpus``: the real spiece.model cannot be downloaded in CI."""
    import io

    spm = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=400, model_type="unigram",
        add_dummy_prefix=add_dummy_prefix, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
        eos_piece="</s>", unk_piece="<unk>", minloglevel=2)
    return buf.getvalue()


@pytest.fixture(scope="session")
def spiece_model(caption_corpus) -> bytes:
    """SigLIP's layout trained on the text kizuna ships (see train_spiece)."""
    return train_spiece(caption_corpus)


@pytest.fixture(scope="session", params=[False, True], ids=["no-dummy-prefix", "dummy-prefix"])
def spiece_models(request, caption_corpus) -> bytes:
    """The same with and without sentencepiece's dummy prefix: the tokenizer must match HF on both."""
    return train_spiece(caption_corpus, add_dummy_prefix=request.param)
