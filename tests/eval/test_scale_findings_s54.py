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
