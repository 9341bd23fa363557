"""Evaluation findings: --act reaching `kizuna eval`, the class-embedding cache's keys (tokenizers without a
config, the text tower's config), eval mode while encoding and each module's own mode restored after, and
run_suite given a suite as a dict."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from _evalhelpers import classification_wds

import kizuna
from kizuna.apps.cli import main
from kizuna.eval import classification
from kizuna.eval.classification import class_embeddings, clear_class_cache

CLASSES = ["cat", "dog", "car"]
TEMPLATES = ["a photo of a {c}.", "a picture of the {c}."]  # classification_wds's


@pytest.fixture(scope="module")
def gelu_bin(tmp_path_factory):
    """An OpenCLIP-like checkpoint: GELU towers saved in the OpenAI layout, which cannot record the activation."""
    from kizuna.models.convert_openai import kizuna_to_openai

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("openclip") / "openclip.bin"
    torch.save(kizuna_to_openai(kizuna.create_model("ViT-mu-8", act="gelu"), strict=False), path)
    return path


def _load(path, act=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the QuickGELU warning of a file loaded without act
        return kizuna.create_model(str(path), act=act).eval()


def _modes(model) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


# ------------------------------------------------------------------------------------------------ 1: --act
def test_eval_act_gelu_loads_the_model_with_gelu(tmp_path, gelu_bin, capsys):
    """`kizuna eval zeroshot --act gelu` parsed --act and dropped it: the GELU checkpoint was evaluated as
    QuickGELU, while the warning told the user to pass --act gelu."""
    data = classification_wds(tmp_path / "cls", n=4)
    cache = tmp_path / "cache"
    clear_class_cache()
    assert main(["eval", "zeroshot", "--model", str(gelu_bin), "--act", "gelu", "--dataset", str(data),
                 "--cache-dir", str(cache), "--batch-size", "4", "--threads", "1", "--no-progress"]) == 0
    assert "QuickGELU" not in capsys.readouterr().err
    used = torch.load(next(cache.iterdir()), weights_only=True)["weights"]
    gelu = class_embeddings(_load(gelu_bin, "gelu"), kizuna.get_tokenizer(_load(gelu_bin, "gelu")), CLASSES,
                            TEMPLATES, cache=False)
    quick = class_embeddings(_load(gelu_bin), kizuna.get_tokenizer(_load(gelu_bin)), CLASSES, TEMPLATES, cache=False)
    assert (gelu - quick).abs().max() > 1e-4  # the two activations are told apart
    torch.testing.assert_close(used, gelu)


def test_a_suite_run_takes_act(tmp_path, gelu_bin):
    """A suite could not say `act` (an unknown key), and its model cache would have served one run's model to
    another run of the same file with the other activation."""
    from kizuna.eval.suite import _Context, check_run_values, load_suite

    data = classification_wds(tmp_path / "cls", n=4)
    f = tmp_path / "suite.json"
    f.write_text(json.dumps([{"model": str(gelu_bin), "dataset": str(data), "task": "zeroshot", "act": "gelu"}]))
    assert load_suite(f)["runs"][0]["act"] == "gelu"
    with pytest.raises(ValueError, match="act must be quick_gelu or gelu, got 'gelo'"):
        check_run_values({"act": "gelo"}, "run 0")
    ctx = _Context("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quick, _ = ctx.model(str(gelu_bin), "cpu")
        gelu, _ = ctx.model(str(gelu_bin), "cpu", act="gelu")
    assert quick.cfg.text.act == "quick_gelu" and gelu.cfg.text.act == gelu.cfg.vision.act == "gelu"


# ------------------------------------------------------------------------------- 2: tokenizers without config
class _Prefixing:
    """A tokenizer without to_config whose behaviour can change (its identity says nothing about it)."""

    def __init__(self, tok, prefix):
        self.tok, self.prefix = tok, prefix

    def __call__(self, texts):
        return self.tok([self.prefix + t for t in texts])


def test_a_tokenizer_without_a_config_is_not_cached(tiny, tmp_path):
    """The cache was keyed by id() of such a tokenizer: tokenizers made one after another reuse the address,
    and later ones got the first one's class weights (the same for one object whose behaviour changed)."""
    model, tok = tiny
    clear_class_cache()
    got = []
    for prefix in ("", "a big red ", "three small blue "):
        f = _Prefixing(tok, prefix)  # freed at the next iteration: the next one may reuse its address
        got.append((class_embeddings(model, f, CLASSES, TEMPLATES, cache_dir=tmp_path / "c"),
                    class_embeddings(model, _Prefixing(tok, prefix), CLASSES, TEMPLATES, cache=False)))
        del f
    for weights, truth in got:
        torch.testing.assert_close(weights, truth)
    assert not torch.allclose(got[0][1], got[1][1])
    one = _Prefixing(tok, "")
    first = class_embeddings(model, one, CLASSES, TEMPLATES)
    one.prefix = "a big red "
    torch.testing.assert_close(class_embeddings(model, one, CLASSES, TEMPLATES), got[1][1])
    assert not torch.equal(first, got[1][1])
    assert len(classification._MEMORY_CACHE) == 0 and not (tmp_path / "c").exists()  # neither cache
    class_embeddings(model, tok, CLASSES, TEMPLATES)  # a tokenizer with a config still is
    assert len(classification._MEMORY_CACHE) == 1


# ------------------------------------------------------------------------------------------- 3, 6: modes
def _model_with_dropout():
    """ViT-mu-8 (no dropout of its own) with dropout on both towers' outputs, as submodules: model.eval() turns
    it off, as a MiniLM tower's."""
    torch.manual_seed(0)
    model = kizuna.create_model("ViT-mu-8")
    for tower in (model.text, model.visual):
        tower.drop = torch.nn.Dropout(0.5)
        tower.register_forward_hook(lambda m, args, out: m.drop(out))
    return model


def test_the_encoders_run_in_eval_mode_and_give_each_module_its_mode_back(tmp_path):
    """A model left in train mode was encoded with dropout on: noisy class weights, which the cache kept and
    served after model.eval(). The encoders now run in eval mode and restore every module's own mode."""
    from kizuna.eval.datasets import load_dataset
    from kizuna.eval.encode import encode_images
    from kizuna.eval.zeroshot import build_classifier

    model = _model_with_dropout()
    tok = kizuna.get_tokenizer(model)
    ds = load_dataset(classification_wds(tmp_path / "cls", n=4))
    model.eval()
    clear_class_cache()
    truth = class_embeddings(model, tok, CLASSES, TEMPLATES, cache=False)
    images = encode_images(model, ds, batch_size=4, progress=False).features

    model.train()
    model.visual.eval()  # e.g. a locked image tower
    before = _modes(model)
    torch.testing.assert_close(class_embeddings(model, tok, CLASSES, TEMPLATES), truth)
    torch.testing.assert_close(build_classifier(model, tok, CLASSES, TEMPLATES), truth)
    torch.testing.assert_close(encode_images(model, ds, batch_size=4, progress=False).features, images)
    assert _modes(model) == before
    model.eval()
    torch.testing.assert_close(class_embeddings(model, tok, CLASSES, TEMPLATES), truth)  # the cached one


def test_evaluate_for_training_gives_each_module_its_own_mode_back(tmp_path, tiny_hf):
    """It restored the mode with model.train(was), which is recursive: a frozen tower the caller kept in eval
    mode came back in train mode."""
    from kizuna.eval.training import evaluate_for_training

    model = kizuna.create_model(str(tiny_hf[0]))
    model.train()
    model.text.eval()  # a locked (LiT-style) text tower
    before = _modes(model)
    evaluate_for_training(model, kizuna.get_tokenizer(model), kizuna.get_preprocess(model),
                          str(classification_wds(tmp_path / "cls", n=4)), None, batch_size=4)
    assert _modes(model) == before


# ------------------------------------------------------------------------------------ 4: the disk cache key
def test_the_disk_cache_tells_text_towers_of_other_configs_apart(tmp_path, gelu_bin):
    """The file name hashed the text tower's weights only: one OpenAI-layout file loaded as QuickGELU and as
    GELU shared a cache file, and the GELU model got the QuickGELU weights."""
    quick, gelu = _load(gelu_bin), _load(gelu_bin, "gelu")
    tok = kizuna.get_tokenizer(quick)
    cache = tmp_path / "cache"
    clear_class_cache()
    torch.testing.assert_close(class_embeddings(quick, tok, CLASSES, TEMPLATES, cache_dir=cache),
                               class_embeddings(quick, tok, CLASSES, TEMPLATES, cache=False))
    clear_class_cache()  # as a new process starts
    truth = class_embeddings(gelu, tok, CLASSES, TEMPLATES, cache=False)
    assert not torch.allclose(truth, class_embeddings(quick, tok, CLASSES, TEMPLATES, cache=False), atol=1e-4)
    torch.testing.assert_close(class_embeddings(gelu, tok, CLASSES, TEMPLATES, cache_dir=cache), truth)
    assert len(list(cache.iterdir())) == 2


# ------------------------------------------------------------------------------------ 5: run_suite(dict)
def test_run_suite_reads_a_dict_or_list_as_it_reads_a_file(tmp_path, tiny_hf):
    """run_suite took a dict as it was: its defaults were ignored (max_samples), a task given as a string ran
    as one task per character, and the alias `zeroshot` was refused."""
    from kizuna.eval.suite import run_suite

    data = classification_wds(tmp_path / "cls", n=8)
    run = {"model": str(tiny_hf[0]), "dataset": str(data), "task": "zeroshot"}
    suite = {"defaults": {"max_samples": 3, "batch_size": 4}, "runs": [run]}
    records = run_suite(suite, progress=False, echo=None)
    assert [r["task"] for r in records] == ["zeroshot_classification"] and records[0]["details"]["n"] == 3
    assert run == {"model": str(tiny_hf[0]), "dataset": str(data), "task": "zeroshot"}  # the caller's, untouched
    records = run_suite([{**run, "task": ["zeroshot"], "max_samples": 2}], progress=False, echo=None)
    assert records[0]["task"] == "zeroshot_classification" and records[0]["details"]["n"] == 2
    with pytest.raises(ValueError, match=r"the suite: run 0: unknown key\(s\) 'batchsize'"):
        run_suite({"runs": [{**run, "batchsize": 4}]}, progress=False, echo=None)
