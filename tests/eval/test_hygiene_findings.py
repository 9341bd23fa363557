"""kizuna inside a host program (library-hygiene hunt, stop 45): what the public API returns can be trained on,
a host's float64 default and global RNG are left alone, a long pass without a bar says where it is, warnings of
a host's other threads keep their own form."""
import re
import threading
import warnings

import numpy as np
import torch
from _evalhelpers import classification_wds, retrieval_wds

from kizuna.eval.classification import evaluate_zeroshot
from kizuna.eval.datasets import load_dataset
from kizuna.eval.encode import encode_images, encode_texts_sharded
from kizuna.eval.retrieval import evaluate_retrieval
from kizuna.eval.zeroshot import build_classifier


def test_features_and_class_weights_can_be_trained_on_and_changed(tiny, tmp_path):
    """Inference-mode tensors: a head on the features failed at backward, an in-place normalisation and a
    zero-shot head initialised from the class weights failed outright."""
    model, tokenizer = tiny
    data = load_dataset(classification_wds(tmp_path / "ds", n=4))
    feats = encode_images(model, data, progress=False).features
    head = torch.nn.Linear(feats.shape[1], 2)
    head(feats).sum().backward()
    feats /= feats.norm(dim=1, keepdim=True)
    texts = encode_texts_sharded(model, tokenizer, ["a cat", "a dog"]).features
    texts *= 2
    weights = torch.nn.Parameter(build_classifier(model, tokenizer, ["cat", "dog"]))
    (feats @ weights.T).sum().backward()
    assert weights.grad is not None


def test_evaluation_under_a_float64_default_and_without_touching_the_global_rng(tiny, tmp_path):
    model, tokenizer = tiny
    data = load_dataset(classification_wds(tmp_path / "ds", n=6))
    plain = evaluate_zeroshot(model, tokenizer, data, progress=False).metrics
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again = evaluate_zeroshot(model, tokenizer, data, progress=False).metrics
        assert repr(again) == repr(plain)  # (acc5 is NaN with 3 classes)
    finally:
        torch.set_default_dtype(before)
    state = torch.random.get_rng_state()
    evaluate_retrieval(model, tokenizer, load_dataset(retrieval_wds(tmp_path / "ret", n=4)), progress=False)
    evaluate_zeroshot(model, tokenizer, data, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the loader's base seed drew from it


def test_a_pass_without_a_bar_says_where_it_is(tiny, tmp_path, monkeypatch, capsys):
    import kizuna.eval.encode as encode

    model, _ = tiny
    data = load_dataset(classification_wds(tmp_path / "ds", n=6))
    monkeypatch.setattr(encode, "HEARTBEAT_SECONDS", 0.0)
    encode_images(model, data, batch_size=2, progress=False, desc="cifar: images")
    err = capsys.readouterr().err
    assert "cifar: images: 1/3 batches after" in err and "cifar: images: 3/3 batches" in err
    monkeypatch.setattr(encode, "HEARTBEAT_SECONDS", 3600.0)
    encode_images(model, data, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""  # a short pass says nothing


def test_retrieval_summary_says_percent(tiny, tmp_path):
    model, tokenizer = tiny
    # (12 images: R@10 is given only past 10 candidates)
    result = evaluate_retrieval(model, tokenizer, load_dataset(retrieval_wds(tmp_path / "ret", n=12)), progress=False)
    values = re.findall(r"R@\d+ ([\d.]+)(%?)", result.summary())
    assert len(values) == 6 and all(unit == "%" for _, unit in values)


def test_a_hosts_other_threads_keep_their_warnings(monkeypatch, capsys):
    """main() in one thread relabelled the warnings of a host's other threads as its own, and kept one of each."""
    import kizuna.apps.info as info
    from kizuna.apps.cli import main

    def run(args):
        def host():
            for line in range(3):
                warnings.warn_explicit("host: something", UserWarning, "host.py", line + 1)

        worker = threading.Thread(target=host)
        worker.start()
        worker.join()
        warnings.warn("the command's own")
        return 0

    monkeypatch.setattr(info, "run", run)
    hosts = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, *rest: hosts.append((filename, lineno))
        assert main(["info", "ViT-mu-8"]) == 0
    err = capsys.readouterr().err
    assert hosts == [("host.py", 1), ("host.py", 2), ("host.py", 3)]  # the host's own handler, each of them
    assert "kizuna info: warning: the command's own" in err and "host: something" not in err


def test_probe_fits_without_a_bar_say_where_they_are_and_make_no_tqdm(monkeypatch, capsys):
    import tqdm

    import kizuna.eval.encode as encode
    from kizuna.eval.linear_probe import linear_probe_from_features

    made = []
    monkeypatch.setattr(tqdm, "tqdm", lambda *a, **k: made.append(1))
    monkeypatch.setattr(encode, "HEARTBEAT_SECONDS", 0.0)
    rng = np.random.default_rng(0)
    x, y = torch.tensor(rng.normal(size=(40, 4))), np.arange(40) % 2
    linear_probe_from_features(x, y, x, y, 2, few_shot=(2,), seeds=1, progress=False)
    assert "fitting probes: 1/2 fits after" in capsys.readouterr().err and not made
