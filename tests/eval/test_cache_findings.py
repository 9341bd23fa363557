"""The on-disk class-embedding cache (``class_embeddings(..., cache_dir=)``) is a convenience: a full disk or a
damaged file is a warning, never the end of an evaluation."""
from __future__ import annotations

import pytest
import torch

from kizuna.eval import classification
from kizuna.eval.classification import class_embeddings, clear_class_cache

CLASSES = ["cat", "dog", "car"]
TEMPLATES = ["a photo of a {c}.", "a {c}."]
# what torch.save raises when the disk fills mid-write (ENOSPC inside its zip writer), a RuntimeError
TORCH_ENOSPC = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def test_a_cache_a_full_disk_stops_is_a_warning_and_leaves_no_temp_file(tiny, tmp_path, monkeypatch):
    """`_save` caught OSError only: `kizuna eval zeroshot --cache-dir` died on torch.save's RuntimeError and left
    classes-<hash>.tmp<pid> behind."""
    model, tok = tiny
    clear_class_cache()
    expected = class_embeddings(model, tok, CLASSES, TEMPLATES, cache=False)
    real = torch.save

    def full(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)  # the file half there, as a full disk leaves it
        raise RuntimeError(TORCH_ENOSPC)

    monkeypatch.setattr(classification.torch, "save", full)
    cache = tmp_path / "cache"
    with pytest.warns(RuntimeWarning, match=r"could not write the class-embedding cache .*classes-.*\.pt "
                                            r"\(\[enforce fail .*going on without it"):
        weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    torch.testing.assert_close(weights, expected)
    assert list(cache.iterdir()) == []  # neither a cache file nor classes-*.tmp<pid>


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_unreadable_cache_file_is_named_removed_and_computed_again(tiny, tmp_path, damage):
    """An empty or cut-off classes-*.pt ended the evaluation with a bare EOFError (or torch's zip error) naming
    no file."""
    model, tok = tiny
    clear_class_cache()
    cache = tmp_path / "cache"
    expected = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    (path,) = cache.glob("classes-*.pt")
    path.write_bytes(b"" if damage == "empty" else path.read_bytes()[:100])
    clear_class_cache()  # not from memory: from the file
    with pytest.warns(RuntimeWarning, match=rf"the class-embedding cache {path} cannot be read .*removed, and the "
                                            r"class embeddings are computed again") as caught:
        weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    if damage == "empty":  # torch's own words were "EOFError: " and nothing more
        assert "(the file is empty (0 bytes))" in str(caught[0].message)
    torch.testing.assert_close(weights, expected)
    stored = torch.load(path, weights_only=True)  # written again, whole
    torch.testing.assert_close(stored["weights"], expected)


def test_a_change_in_how_templates_are_filled_misses_the_disk_cache(tiny, tmp_path, monkeypatch):
    """The files were keyed on the raw templates: when filling "{{x}}" changed (a fix), files written before it
    served the old prompts' embeddings (acc1 3.5% where the prompts now give 7%). The filled prompts are in the
    key: other prompts from the same templates are computed afresh."""
    model, tok = tiny
    clear_class_cache()
    first = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("classes-*.pt"))) == 1
    clear_class_cache()
    monkeypatch.setattr(classification, "fill_template", lambda t, c: t.replace("{c}", f"{c} {c}"))
    changed = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("classes-*.pt"))) == 2 and not torch.equal(first, changed)
    assert torch.allclose(changed, class_embeddings(model, tok, CLASSES, TEMPLATES, cache=False), atol=1e-6)


def _fresh_tiny(tiny_hf):
    import kizuna

    model = kizuna.create_model(str(tiny_hf[0])).eval()
    return model, kizuna.get_tokenizer(model)


def _ablate_first_mlp(model, tok):
    return model.text.transformer.blocks[0].mlp.register_forward_hook(lambda module, args, out: out * 0)


def _swap_activations(model, tok):
    for block in model.text.transformer.blocks:
        block.mlp.act = torch.nn.ReLU()


def _swap_token_rows(model, tok):
    """The embeddings of "cat" and "dog" exchanged through ``.data``: no version bump, every parameter's sum kept."""
    cat, dog = (int(tok([word])[0, 1]) for word in ("cat", "dog"))
    with torch.no_grad():
        table = model.text.token_embed.weight.data
        table[[cat, dog]] = table[[dog, cat]].clone()


@pytest.mark.parametrize("change", [_ablate_first_mlp, _swap_activations, _swap_token_rows])
def test_a_changed_text_tower_misses_both_caches(tiny_hf, tmp_path, change):
    """A forward hook (an ablation), a swapped activation and a ``.data`` write that keeps the sums change what
    the tower computes, and neither key saw them: the memory and disk caches served the old class weights."""
    model, tok = _fresh_tiny(tiny_hf)
    clear_class_cache()
    before = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path)  # fills both caches
    change(model, tok)
    truth = class_embeddings(model, tok, CLASSES, TEMPLATES, cache=False)
    assert not torch.allclose(truth, before)
    torch.testing.assert_close(class_embeddings(model, tok, CLASSES, TEMPLATES), truth)  # memory
    clear_class_cache()
    torch.testing.assert_close(class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path), truth)  # disk


def test_content_hash_takes_scalar_tensors(tiny):
    """A 0-dim tensor (a CLIP model's logit_scale) has no byte view: content_hash(model) raised."""
    from kizuna.eval.encode import content_hash

    model, _ = tiny
    digest = content_hash(model)
    assert len(digest) == 64 and digest == content_hash(model) != content_hash(model.text)
    scalar = torch.nn.Module()
    scalar.register_buffer("t", torch.tensor(2.0))
    other = torch.nn.Module()
    other.register_buffer("t", torch.tensor(3.0))
    assert content_hash(scalar) != content_hash(other)


def test_a_suite_takes_templates_that_are_functions(tmp_path, tiny_hf):
    """A Python suite's templates may be functions of the class name (the suite's checks accept them), and the
    suite's dataset key JSON-encoded them: TypeError before any run."""
    from _evalhelpers import classification_wds

    from kizuna.eval.suite import run_suite

    data = classification_wds(tmp_path / "cls", n=6, split="test")
    records = run_suite({"runs": [{"model": str(tiny_hf[0]), "dataset": str(data), "task": "zeroshot",
                                   "templates": [lambda c: f"a photo of a {c}."]}]},
                        out_dir=tmp_path / "out", progress=False)
    assert 0.0 <= records[0]["metrics"]["acc1"] <= 1.0
