import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _evalhelpers import retrieval_wds

import kizuna
from kizuna.eval.datasets import load_dataset
from kizuna.eval.retrieval import (
    evaluate_retrieval, full_matrix_ranks, retrieval_from_features, retrieval_metrics, retrieval_ranks,
)


def _dyadic(shape, gen):
    """Small multiples of 1/4: every dot product is exact in float32 in any summation order, and
    ties are frequent - so chunked vs full is an exact comparison, ties included."""
    return torch.randint(-2, 3, shape, generator=gen).float() / 4


@pytest.mark.parametrize("query_chunk,key_chunk", [(1, 1), (7, 13), (64, 5), (1000, 100000)])
def test_chunked_equals_full_matrix_with_ties(query_chunk, key_chunk):
    g = torch.Generator().manual_seed(query_chunk * 31 + key_chunk)
    ni = 120
    per_image = torch.randint(1, 6, (ni,), generator=g)
    t2i = torch.repeat_interleave(torch.arange(ni), per_image)
    t2i = t2i[torch.randperm(len(t2i), generator=g)]  # captions in any order
    img, txt = _dyadic((ni, 5), g), _dyadic((len(t2i), 5), g)
    img[10] = img[11]  # exact duplicate images and captions
    txt[3] = txt[4]
    chunked = retrieval_ranks(img, txt, t2i, query_chunk=query_chunk, key_chunk=key_chunk)
    full = full_matrix_ranks(img, txt, t2i)
    assert torch.equal(chunked[0], full[0]) and torch.equal(chunked[1], full[1])
    sim = img @ txt.T
    assert (sim.unsqueeze(2) == sim.unsqueeze(1)).sum() > sim.numel()  # the test really has ties


def test_chunked_equals_full_matrix_random_floats():
    g = torch.Generator().manual_seed(0)
    img, txt = F.normalize(torch.randn(300, 16, generator=g), dim=-1), F.normalize(torch.randn(1500, 16, generator=g), dim=-1)
    t2i = torch.arange(1500) // 5
    a, b = retrieval_ranks(img, txt, t2i, query_chunk=64, key_chunk=200), full_matrix_ranks(img, txt, t2i)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_rank_definition_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # images 0 and 2 identical
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    t2i = torch.tensor([2, 1, 1, 0])  # caption 0 and 3 identical, belong to images 2 and 0
    i2t, t2i_r = retrieval_ranks(img, txt, t2i, query_chunk=2, key_chunk=3)
    # image 0: scores [1, 0, .5, 1]; its caption 3 ties with caption 0 (lower index first) -> rank 1
    # image 1: scores [0, 1, .5, 0]; caption 1 is first -> rank 0
    # image 2: same scores as image 0; its caption 0 comes first -> rank 0
    assert i2t.tolist() == [1, 0, 0]
    # caption 0 -> images scores [1, 0, 1]: image 2 behind image 0 -> rank 1; caption 3 -> image 0 -> 0
    # caption 2 -> scores [.5, .5, .5]: image 1 behind image 0 -> rank 1
    assert t2i_r.tolist() == [1, 0, 1, 0]


def test_metrics_from_ranks():
    m = retrieval_metrics(torch.tensor([0, 4, 9, 20]), torch.tensor([0, 0, 1, 5, 10, 30]))
    assert m["image_to_text_R@1"] == 0.25 and m["image_to_text_R@5"] == 0.5 and m["image_to_text_R@10"] == 0.75
    assert m["image_to_text_median_rank"] == 7.5  # 1-based ranks 1, 5, 10, 21
    assert m["text_to_image_R@1"] == pytest.approx(2 / 6) and m["text_to_image_median_rank"] == 4.0
    assert m["text_retrieval_recall@5"] == m["image_to_text_R@5"]  # CLIP_benchmark names
    assert m["image_retrieval_recall@10"] == m["text_to_image_R@10"]


def test_retrieval_equals_transformers(tmp_path, tiny_hf, tiny):
    _, hf = tiny_hf
    model, tok = tiny
    ds = load_dataset(retrieval_wds(tmp_path / "r", n=14))
    res = evaluate_retrieval(model, tok, ds, batch_size=4, text_batch_size=7, query_chunk=5, key_chunk=6,
                             progress=False)
    pre = kizuna.get_preprocess(model)
    pair = ds.pair_dataset(pre)
    pixels = torch.stack([pair[int(i)]["image"] for i in ds.positions])
    texts = [t for caps in ds.captions for t in caps]
    t2i = np.repeat(np.arange(len(ds)), [len(c) for c in ds.captions])
    with torch.no_grad():
        out_i, out_t = hf.get_image_features(pixel_values=pixels), hf.get_text_features(input_ids=tok(texts))
    img = F.normalize(out_i if isinstance(out_i, torch.Tensor) else out_i.pooler_output, dim=-1)
    txt = F.normalize(out_t if isinstance(out_t, torch.Tensor) else out_t.pooler_output, dim=-1)
    ref_i2t, ref_t2i = full_matrix_ranks(img, txt, t2i)
    assert res.image_to_text_ranks.tolist() == ref_i2t.tolist()
    assert res.text_to_image_ranks.tolist() == ref_t2i.tolist()
    assert res.num_images == 14 and res.num_texts == len(texts)
    assert res.metrics == retrieval_metrics(ref_i2t, ref_t2i)


def test_corrupt_image_drops_it_and_its_captions(tmp_path, tiny):
    model, tok = tiny
    ds = load_dataset(retrieval_wds(tmp_path / "r", n=8, corrupt=(2,)))
    res = evaluate_retrieval(model, tok, ds, progress=False)
    assert res.skipped["corrupt_image"] == 1
    assert res.num_images == 7 and res.num_texts == sum(len(c) for c in ds.captions) - len(ds.captions[2])


def test_rejected_caption_and_captionless_image():
    img = torch.eye(3)
    txt = torch.eye(3)[[0, 1, 1, 2]]
    valid = torch.tensor([True, True, False, False])  # image 2 loses its only caption
    res = retrieval_from_features(img, txt, [0, 1, 1, 2], text_valid=valid)
    assert res.num_images == 2 and res.num_texts == 2 and res.skipped["image_without_usable_caption"] == 1
    assert res.metrics["image_to_text_R@1"] == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ranking_on_gpu_equals_cpu():
    g = torch.Generator().manual_seed(1)
    img, txt = _dyadic((200, 6), g), _dyadic((700, 6), g)
    t2i = torch.randint(0, 200, (700,), generator=g)
    t2i[:200] = torch.arange(200)
    cpu = retrieval_ranks(img, txt, t2i, query_chunk=50, key_chunk=64)
    gpu = retrieval_ranks(img, txt, t2i, query_chunk=50, key_chunk=64, device="cuda")
    assert torch.equal(cpu[0], gpu[0]) and torch.equal(cpu[1], gpu[1])


def test_nan_features_are_refused_not_ranked_first(tiny_hf, tmp_path):
    """A NaN similarity compares neither above nor equal, so retrieval ranked it first: a model with NaN weights
    scored R@1 100%. The commands refuse such features; training's evaluation logs NaN and goes on."""
    import copy
    import warnings

    from kizuna.eval.encode import NonFiniteFeatures
    from kizuna.eval.training import evaluate_for_training

    model = copy.deepcopy(kizuna.create_model(str(tiny_hf[0]))).eval()
    with torch.no_grad():
        model.visual.proj.weight.fill_(float("nan"))
    root = retrieval_wds(tmp_path / "ret", n=6)
    ds = load_dataset(root, task="retrieval")
    with pytest.raises(NonFiniteFeatures, match=r"images: the model gave NaN or inf features for 6 of 6"):
        evaluate_retrieval(model, kizuna.get_tokenizer(model), ds, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate_for_training(model, kizuna.get_tokenizer(model), kizuna.get_preprocess(model), None,
                                        str(root))
    assert np.isnan(metrics["retrieval/image_to_text_R@1"]) and np.isnan(metrics["retrieval/text_to_image_R@10"])
    assert any("NaN or inf features" in str(w.message) for w in caught)


def test_the_reference_ranks_of_images_without_any_caption_are_minus_one_as_the_chunked_ones():
    """full_matrix_ranks raised IndexError (argmax over zero captions) where retrieval_ranks gives -1."""
    img = torch.nn.functional.normalize(torch.randn(2, 3), dim=-1)
    txt = torch.zeros(0, 3)
    i2t, t2i = full_matrix_ranks(img, txt, [])
    chunked = retrieval_ranks(img, txt, [])
    assert i2t.tolist() == chunked[0].tolist() == [-1, -1] and t2i.numel() == chunked[1].numel() == 0
