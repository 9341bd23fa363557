"""Memory that grew with a training run's evaluations (stop 54's scale hunt): the class-embedding cache kept an entry
per evaluation of a text tower whose weights had changed since (32 of C x D)."""
import torch

import kizuna
from kizuna.eval import classification as C


def test_a_changed_text_tower_keeps_one_class_cache_entry_per_dataset():
    C.clear_class_cache()
    model = kizuna.create_model("ViT-mu-8")
    tokenizer = kizuna.get_tokenizer(model)
    first, second = ["cat", "dog", "bird"], ["red", "green"]
    for step in range(5):  # evaluations between optimizer steps, on two datasets
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-3 * (step > 0))
        a = C.class_embeddings(model, tokenizer, first, ["a photo of a {c}."])
        C.class_embeddings(model, tokenizer, second, ["{c}"])
    assert len(C._MEMORY_CACHE) == 2  # (10: every evaluation's, none of which could be hit again)
    # another model with the same classes keeps its own entry; the last weights' entry still hits
    other = kizuna.create_model("ViT-mu-8")
    C.class_embeddings(other, tokenizer, first, ["a photo of a {c}."])
    assert len(C._MEMORY_CACHE) == 3
    again = C.class_embeddings(model, tokenizer, first, ["a photo of a {c}."])
    assert torch.equal(again, a) and len(C._MEMORY_CACHE) == 3
    C.clear_class_cache()


def test_prompts_are_tokenized_in_chunks_with_the_same_groups_and_digest(monkeypatch):
    import hashlib

    from kizuna.eval import zeroshot

    model = kizuna.create_model("ViT-mu-8")
    tokenizer = kizuna.get_tokenizer(model)
    names = [f"class {i}" for i in range(40)] + ["Class 3", "class  7"]  # (one text to CLIP's BPE each)
    templates = ["a photo of a {c}.", "{c}", "a drawing of a {c}."]
    prompts = [zeroshot.fill_template(t, c) for c in names for t in templates]
    ids = tokenizer(prompts)
    whole = hashlib.sha256(ids.numpy().tobytes() + repr(tuple(ids.shape)).encode()).digest()  # (as before)
    seen = []
    counting = lambda texts: seen.append(len(texts)) or tokenizer(texts)  # noqa: E731
    monkeypatch.setattr(zeroshot, "PROMPTS_A_CHUNK", 7)
    assert zeroshot.same_prompts(counting, names, templates) == [[3, 40], [7, 41]]
    assert max(seen) <= 6  # (whole classes: 2 of 3 prompts)
    seen.clear()
    assert C._token_ids_digest(counting, prompts) == whole and max(seen) <= 7


def test_a_gone_text_tower_takes_its_class_cache_entry_with_it():
    """Its key (the module's id, its tensors' addresses) is never met again: a service loading the same checkpoint
    per request kept 32 entries nothing could hit (stop 54's one-process hunt)."""
    import gc

    C.clear_class_cache()
    for _ in range(5):
        model = kizuna.create_model("ViT-mu-8")
        C.class_embeddings(model, kizuna.get_tokenizer(model), ["cat", "dog"], ["a photo of a {c}."])
        assert len(C._MEMORY_CACHE) == 1
        del model
        gc.collect()
    assert len(C._MEMORY_CACHE) == 0 and len(C._LAST_KEY_OF) == 0
