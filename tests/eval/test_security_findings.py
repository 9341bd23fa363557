"""Findings of a security review of the evaluation code: the on-disk class-embedding cache in a folder other
users can write (a shared ``--cache-dir``), and suite files that say more than they seem to."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from kizuna.eval import classification
from kizuna.eval.classification import class_embeddings, clear_class_cache
from kizuna.eval.suite import check_run_values, load_suite

CLASSES = ["cat", "dog", "car"]
TEMPLATES = ["a photo of a {c}.", "a {c}."]


def _cached(tiny, cache: Path) -> tuple[torch.Tensor, Path]:
    """The class weights, written to ``cache``, and the cache file; the memory cache emptied (the next call
    reads the file, as a new process would)."""
    model, tok = tiny
    clear_class_cache()
    weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    (path,) = cache.glob("classes-*.pt")
    clear_class_cache()
    return weights, path


def test_the_cache_is_not_written_through_a_symlink_planted_at_a_predictable_temp_name(tiny, tmp_path):
    """`_save` wrote classes-<hash>.tmp<pid> with torch.save, which followed a symlink another user of the
    folder planted there (the hash is the same for everyone, the pid guessable): the link's target was
    overwritten and then renamed into the cache."""
    model, tok = tiny
    cache = tmp_path / "cache"
    expected, path = _cached(tiny, cache)
    path.unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    planted = path.with_suffix(f".tmp{os.getpid()}")
    planted.symlink_to(victim)
    weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=cache)
    torch.testing.assert_close(weights, expected)
    assert victim.read_text() == "precious data\n"
    assert path.is_file() and not path.is_symlink()
    torch.testing.assert_close(torch.load(path, weights_only=True)["weights"], expected)
    assert planted.is_symlink() and sorted(p.name for p in cache.iterdir()) == sorted([path.name, planted.name])


def test_a_cache_file_this_process_may_not_read_is_left_alone(tiny, tmp_path, monkeypatch):
    """Another user's cache file in a shared folder (a PermissionError) was taken for a damaged one and deleted
    (or, in a folder with the sticky bit, the unlink's PermissionError ended the evaluation)."""
    model, tok = tiny
    expected, path = _cached(tiny, tmp_path / "cache")
    before = path.read_bytes()

    def refused(f, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr(classification.torch, "load", refused)
    with pytest.warns(RuntimeWarning) as caught:
        weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path / "cache")
    assert [str(w.message) for w in caught] == [
        f"the class-embedding cache {path} cannot be read (PermissionError: [Errno 13] Permission denied: "
        f"'{path}'); the class embeddings are computed without it"]  # once: no second one for writing it
    torch.testing.assert_close(weights, expected)
    assert path.read_bytes() == before  # neither removed nor overwritten


def test_a_damaged_cache_file_that_cannot_be_removed_is_a_warning(tiny, tmp_path, monkeypatch):
    """A damaged file of another user's in a folder with the sticky bit: the unlink's PermissionError ended
    the evaluation."""
    model, tok = tiny
    expected, path = _cached(tiny, tmp_path / "cache")
    path.write_bytes(b"")
    unlink = Path.unlink

    def refused(self, *args, **kwargs):
        if self == path:
            raise PermissionError(1, "Operation not permitted", str(self))
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.warns(RuntimeWarning, match=r"cannot be read \(the file is empty \(0 bytes\)\); not removed "
                                            r"\(.*Operation not permitted.*\); the class embeddings are computed "
                                            r"without it"):
        weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(weights, expected)
    assert path.read_bytes() == b""


@pytest.mark.parametrize("planted", ["too narrow", "other classes", "other class count", "other templates",
                                     "not finite"])
def test_a_cache_file_holding_other_weights_is_recomputed(tiny, tmp_path, planted):
    """The stored class names and templates were never compared nor the shape checked: a [3, 7] file ended in a
    matmul traceback, and one of other classes (or other prompts) was used as these classes' weights."""
    model, tok = tiny
    expected, path = _cached(tiny, tmp_path / "cache")
    record = {"weights": expected.clone(), "classnames": list(CLASSES), "templates": list(TEMPLATES)}
    if planted == "too narrow":
        record["weights"] = torch.randn(3, 7)
    elif planted == "other classes":  # the same shape
        record["classnames"] = ["car", "dog", "cat"]
        record["weights"] = expected.flip(0)
    elif planted == "other class count":
        record["classnames"], record["weights"] = ["x"], torch.randn(10, expected.shape[1])
    elif planted == "other templates":
        record["templates"] = ["a drawing of a {c}."]
        record["weights"] = torch.randn_like(expected)
    else:
        record["weights"][0, 0] = float("nan")
    torch.save(record, path)
    with pytest.warns(RuntimeWarning, match=rf"the class-embedding cache {path} holds .*; removed, and the class "
                                            r"embeddings are computed again"):
        weights = class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(weights, expected)
    stored = torch.load(path, weights_only=True)  # written again, right
    torch.testing.assert_close(stored["weights"], expected)
    assert stored["classnames"] == CLASSES and stored["templates"] == TEMPLATES


def test_a_matching_cache_file_is_still_used(tiny, tmp_path, monkeypatch):
    """The checks refuse nothing a cache written by class_embeddings holds: the texts are not encoded again."""
    model, tok = tiny
    expected, _ = _cached(tiny, tmp_path / "cache")
    monkeypatch.setattr(classification, "encode_texts_sharded", lambda *a, **k: pytest.fail("encoded again"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(class_embeddings(model, tok, CLASSES, TEMPLATES, cache_dir=tmp_path / "cache"),
                                   expected)


@pytest.mark.parametrize("key", ["allow_jit", "zeroshot"])
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, [False]])
def test_allow_jit_and_zeroshot_take_json_booleans_only(key, value):
    """bool(r.get("allow_jit")) read "allow_jit": "false" as true: TorchScript loading (which runs the archive's
    code) turned on by a setting that says off; "zeroshot": "false" likewise kept the zero-shot comparison."""
    with pytest.raises(ValueError, match=rf"^run 0: {key} must be true or false \(a JSON boolean\), got "):
        check_run_values({key: value}, "run 0")


def test_json_booleans_are_accepted_for_allow_jit_and_zeroshot():
    for value in (True, False):
        r = {"allow_jit": value, "zeroshot": value}
        check_run_values(r, "run 0")
        assert r == {"allow_jit": value, "zeroshot": value}


def test_a_suite_file_saying_allow_jit_false_as_a_string_is_refused(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"runs": [{"model": "ViT-mu-8", "dataset": str(tmp_path), "task": "zeroshot",
                                       "allow_jit": "false"}]}))
    with pytest.raises(ValueError, match=rf"^{f}: run 0: allow_jit must be true or false .*got 'false'"):
        load_suite(f)


def test_a_suite_file_nested_too_deeply_is_an_error_naming_it(tmp_path):
    """[[[[... 100000 deep ended in a RecursionError traceback out of the JSON decoder."""
    f = tmp_path / "deep.json"
    f.write_text('{"runs": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=rf"^{f}: not valid JSON \(nested too deeply\)$"):
        load_suite(f)


def test_a_suites_device_is_checked_as_the_command_lines(tmp_path):
    """--device mps is refused on the command line; a suite's "device": "mps" (or "cuda" on a machine without one)
    reached .to() and ended in a traceback (review)."""
    import torch

    from kizuna.eval.suite import check_run_values

    for device in ("mps", "meta") + (() if torch.cuda.is_available() else ("cuda",)):
        with pytest.raises(ValueError, match=rf"run 0: device '{device}'"):
            check_run_values({"device": device}, "run 0")
    check_run_values({"device": "cpu"}, "run 0")


def test_ranks_agree_on_the_class_cache_through_gather_object_not_a_cpu_all_reduce(tmp_path, monkeypatch, tiny):
    """The ranks' agreement on a cache hit was an all_reduce of a CPU tensor, which NCCL refuses: every rank of a
    GPU `torchrun ... eval --cache-dir` failed before its first feature (GPU-path review)."""
    from kizuna.eval import classification

    asked = []
    monkeypatch.setattr(classification, "gather_object", lambda obj: asked.append(obj) or [obj, obj])
    model, tokenizer = tiny
    first = classification.class_embeddings(model, tokenizer, ["cat", "dog"], ["a {}."], cache_dir=tmp_path)
    classification.clear_class_cache()
    again = classification.class_embeddings(model, tokenizer, ["cat", "dog"], ["a {}."], cache_dir=tmp_path)
    assert asked == [False, True, True] and torch.equal(first, again)
