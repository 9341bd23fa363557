"""Session 54 mutation findings: the class-embedding memory cache keeps one entry per text tower and dataset
(eval/classification.py _remember, _LAST_KEY_OF, clear_class_cache)."""
import torch

import kizuna
from kizuna.eval import classification as C


def _nudge(model, by):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


def test_weights_read_from_the_disk_cache_replace_the_towers_older_entry(tmp_path):
    """Kills: _remember called without the text tower where the weights come from the cache file (the entry of
    the tower's weights before stayed, one more each time)."""
    C.clear_class_cache()
    model = kizuna.create_model("ViT-mu-8")
    tokenizer = kizuna.get_tokenizer(model)
    classes, templates = ["cat", "dog"], ["a photo of a {c}."]
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    first = C.class_embeddings(model, tokenizer, classes, templates, cache_dir=tmp_path)  # file A
    _nudge(model, 1e-3)
    w2 = {k: v.clone() for k, v in model.state_dict().items()}
    C.class_embeddings(model, tokenizer, classes, templates, cache_dir=tmp_path)  # file B; A's entry dropped
    assert len(C._MEMORY_CACHE) == 1 and len(list(tmp_path.glob("classes-*.pt"))) == 2
    with C._MEMORY_CACHE_LOCK:
        C._MEMORY_CACHE.clear()  # (a memory entry lost: the files serve them)
    model.load_state_dict(w1)
    C.class_embeddings(model, tokenizer, classes, templates, cache_dir=tmp_path)  # file A, from the disk
    model.load_state_dict(w2)
    C.class_embeddings(model, tokenizer, classes, templates, cache_dir=tmp_path)  # file B, from the disk
    assert len(C._MEMORY_CACHE) == 1  # (2: A's entry, which nothing hits, kept)
    model.load_state_dict(w1)
    again = C.class_embeddings(model, tokenizer, classes, templates, cache_dir=tmp_path)
    assert torch.equal(again, first) and len(C._MEMORY_CACHE) == 1
    C.clear_class_cache()


def test_clearing_the_cache_forgets_the_towers_last_keys():
    """Kills: clear_class_cache leaving _LAST_KEY_OF (the keys of towers long gone, kept in a process for ever)."""
    model = kizuna.create_model("ViT-mu-8")
    C.class_embeddings(model, kizuna.get_tokenizer(model), ["cat"], ["{c}"])
    assert C._LAST_KEY_OF
    C.clear_class_cache()
    assert not C._LAST_KEY_OF and not C._MEMORY_CACHE
