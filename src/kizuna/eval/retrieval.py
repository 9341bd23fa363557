"""Image-text retrieval: R@1/5/10 and median rank in both directions, several captions per image.

    ds = load_dataset("/data/flickr8k", split="test")
    res = evaluate_retrieval(model, tokenizer, ds)
    res.metrics["image_to_text_R@1"], res.metrics["text_to_image_median_rank"]

Definitions (ranks are 0-based internally, reported 1-based for the median):

* text -> image: each caption is a query over all images; its rank is the position of its own image.
* image -> text: each image is a query over all captions; its rank is the position of the *first*
  of its captions (any correct caption counts, as in CLIP_benchmark).
* R@K: share of queries with rank < K. Median rank: median of (rank + 1).
* Ties: the ranking is a stable descending sort, so among equal similarities the lower index comes
  first. The rank of the correct item is then ``#{wrong: s > s*} + #{wrong: s == s* and index <
  index*}``, where ``s*`` is the best correct score and ``index*`` the lowest index achieving it.

:func:`retrieval_ranks` computes exactly that in blocks of ``query_chunk x key_chunk``: for each
chunk of queries it first reads the correct items' scores out of the blocks that contain them, then
counts, block by block, the wrong items ranked above. Only the ranks are kept, so a 100k x 500k
similarity matrix never exists; the result equals :func:`full_matrix_ranks` (the whole matrix,
``torch.sort(stable=True)``) whenever the block products equal the full product's entries (always
for exactly representable values; for arbitrary floats up to last-bit rounding of the matmul).

CLIP_benchmark's names are included as aliases: ``text_retrieval_recall@K`` (image -> text) and
``image_retrieval_recall@K`` (text -> image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from kizuna.data.sources import SkipCounter
from kizuna.models.layers import unit_rows
from kizuna.models.losses import similarity

from .encode import (as_tensor, check_finite, check_no_zero_rows, encode_images, encode_texts_sharded, is_count,
                     row_mask)

__all__ = ["RetrievalResult", "evaluate_retrieval", "full_matrix_ranks", "retrieval_metrics", "retrieval_ranks",
           "retrieval_from_features"]

KS = (1, 5, 10)


def _positives_csr(text_to_image: torch.Tensor, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions grouped by image: (ptr [Ni+1], caption indices sorted by image then index)."""
    order = torch.sort(text_to_image, stable=True).indices
    counts = torch.bincount(text_to_image, minlength=n_images)
    ptr = torch.zeros(n_images + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(counts, 0)
    return ptr, order


@torch.no_grad()
def _chunked_ranks(queries: torch.Tensor, keys: torch.Tensor, pos_query: torch.Tensor, pos_key: torch.Tensor,
                   query_chunk: int, key_chunk: int) -> torch.Tensor:
    """Rank of the best positive for every query; positives given as (query, key) pairs sorted by query."""
    nq, nk = queries.shape[0], keys.shape[0]
    dev = queries.device
    ranks = torch.full((nq,), -1, dtype=torch.long)
    # pair boundaries per query chunk (pos_query is sorted)
    bounds = torch.searchsorted(pos_query, torch.arange(0, nq + query_chunk, query_chunk).clamp(max=nq)).tolist()
    pos_query, pos_key = pos_query.to(dev), pos_key.to(dev)
    for ci, q0 in enumerate(range(0, nq, query_chunk)):
        q1 = min(q0 + query_chunk, nq)
        q = queries[q0:q1]
        p0, p1 = bounds[ci], bounds[ci + 1]
        pq, pk = pos_query[p0:p1] - q0, pos_key[p0:p1]
        m = q1 - q0
        if p1 == p0:
            continue
        # 1) the correct items' scores, read from the very blocks the counting pass computes (one block, the
        # common case of an evaluation set: computed once for both passes, not twice)
        values = torch.empty(p1 - p0, dtype=queries.dtype, device=dev)
        blocks = torch.div(pk, key_chunk, rounding_mode="floor")
        kept = {}
        for b in torch.unique(blocks).tolist():
            k0 = b * key_chunk
            s = similarity(q, keys[k0 : min(k0 + key_chunk, nk)])
            sel = (blocks == b).nonzero().squeeze(1)
            values[sel] = s[pq[sel], pk[sel] - k0]
            if nk <= key_chunk:
                kept[k0] = s
        best = torch.full((m,), float("-inf"), dtype=queries.dtype, device=dev).scatter_reduce(0, pq, values, "amax")
        at_best = values == best[pq]
        first = torch.full((m,), nk, dtype=torch.long, device=dev).scatter_reduce(0, pq[at_best], pk[at_best], "amin")
        has = torch.zeros(m, dtype=torch.bool, device=dev)
        has[pq] = True
        # 2) count the items ranked above the first correct one, block by block
        above = torch.zeros(m, dtype=torch.long, device=dev)
        for k0 in range(0, nk, key_chunk):
            s = kept.pop(k0) if k0 in kept else similarity(q, keys[k0 : min(k0 + key_chunk, nk)])
            idx = torch.arange(k0, k0 + s.shape[1], device=dev)
            bcol = best[:, None]
            above += (s > bcol).sum(1) + ((s == bcol) & (idx[None, :] < first[:, None])).sum(1)
        ranks[q0:q1] = torch.where(has, above, torch.full_like(above, -1)).cpu()
    return ranks


def retrieval_ranks(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image,
                    query_chunk: int = 1024, key_chunk: int = 16384, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text ranks [Ni], text->image ranks [Nt]), 0-based, by dot product (pass unit rows for cosine
    similarity, as :func:`retrieval_from_features` does), computed in blocks (module doc) on
    ``device`` (default: where the features are). An image with no caption gets rank -1 (excluded by
    :func:`retrieval_metrics`). Ranks are returned on the CPU. NaN/inf features raise
    :class:`~kizuna.eval.encode.NonFiniteFeatures`."""
    for name, chunk in (("query_chunk", query_chunk), ("key_chunk", key_chunk)):
        if not is_count(chunk):  # 0: "step must be nonzero"
            raise ValueError(f"{name} must be a whole number >= 1 (rows per block), got {chunk!r}")
    img, txt = as_tensor(image_features, "image_features").float(), as_tensor(text_features, "text_features").float()
    # a NaN score compares neither above nor equal, so a NaN row ranked its own item first (R@1 100%)
    check_finite(img, None, "images")
    check_finite(txt, None, "texts")
    if device is not None:
        img, txt = img.to(device), txt.to(device)
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    ni, nt = img.shape[0], txt.shape[0]
    if t2i.shape[0] != nt:
        raise ValueError(f"text_to_image has {t2i.shape[0]} entries for {nt} texts")
    if nt and (int(t2i.min()) < 0 or int(t2i.max()) >= ni):
        raise ValueError("text_to_image refers to an image outside 0..N-1")
    ptr, order = _positives_csr(t2i, ni)
    counts = ptr[1:] - ptr[:-1]
    pos_q_i2t = torch.repeat_interleave(torch.arange(ni), counts)  # CPU bookkeeping, moved per block
    i2t = _chunked_ranks(img, txt, pos_q_i2t, order, query_chunk, key_chunk)
    t2i_r = _chunked_ranks(txt, img, torch.arange(nt), t2i, query_chunk, key_chunk)
    return i2t, t2i_r


def full_matrix_ranks(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the whole similarity matrix, stable descending sort, position of the first correct item."""
    # (numpy arrays, as retrieval_ranks takes them: "'numpy.ndarray' object has no attribute 'float'")
    img, txt = as_tensor(image_features, "image_features").float(), as_tensor(text_features, "text_features").float()
    check_finite(img, None, "images")
    check_finite(txt, None, "texts")
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    if not len(txt):  # no captions: every image's rank is -1, as retrieval_ranks gives (argmax of nothing raised)
        return torch.full((img.shape[0],), -1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    sim = similarity(img, txt)  # [Ni, Nt]
    order_i2t = torch.sort(sim, dim=1, descending=True, stable=True).indices
    correct = t2i[order_i2t] == torch.arange(img.shape[0])[:, None]
    i2t = torch.where(correct.any(1), correct.float().argmax(1), torch.full((img.shape[0],), -1)).long()
    order_t2i = torch.sort(sim.T, dim=1, descending=True, stable=True).indices
    t2i_r = (order_t2i == t2i[:, None]).float().argmax(1).long()
    return i2t, t2i_r


def retrieval_metrics(i2t_ranks: torch.Tensor, t2i_ranks: torch.Tensor, ks=KS, num_images: int | None = None,
                      num_texts: int | None = None) -> dict[str, float]:
    """R@K, median and mean rank each way. Given the candidates' numbers (``num_texts`` for image->text,
    ``num_images`` for text->image), R@K with fewer than K candidates is NaN, as top-5 of fewer than 5 classes
    (it was 100% whatever the model: a 6-image set's text->image R@10; CLIP_benchmark's top-k refuses it)."""
    out: dict[str, float] = {}
    for name, r, candidates in (("image_to_text", i2t_ranks, num_texts), ("text_to_image", t2i_ranks, num_images)):
        r = r[r >= 0].double()
        for k in ks:
            given = len(r) and (candidates is None or candidates >= k)
            out[f"{name}_R@{k}"] = float((r < k).double().mean()) if given else float("nan")
        out[f"{name}_median_rank"] = float(np.median(r.numpy() + 1)) if len(r) else float("nan")
        out[f"{name}_mean_rank"] = float(r.mean() + 1) if len(r) else float("nan")
    for k in ks:  # CLIP_benchmark's names
        out[f"text_retrieval_recall@{k}"] = out[f"image_to_text_R@{k}"]
        out[f"image_retrieval_recall@{k}"] = out[f"text_to_image_R@{k}"]
    return out


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    image_to_text_ranks: torch.Tensor  # [Ni] 0-based
    text_to_image_ranks: torch.Tensor  # [Nt] 0-based
    text_to_image: torch.Tensor  # [Nt] image of each caption
    num_images: int = 0
    num_texts: int = 0
    skipped: SkipCounter = field(default_factory=SkipCounter)
    dataset: str = ""

    def summary(self) -> str:
        m = self.metrics
        from .classification import _pct as percent  # (n/a: R@K of fewer than K candidates)

        s = (f"retrieval {self.dataset} ({self.num_images} images, {self.num_texts} captions):\n"
             # (in %, said: the training line prints the same metrics as fractions)
             f"  image->text  R@1 {percent(m['image_to_text_R@1'])}  R@5 {percent(m['image_to_text_R@5'])}  "
             f"R@10 {percent(m['image_to_text_R@10'])}  median rank {m['image_to_text_median_rank']:g}\n"
             f"  text->image  R@1 {percent(m['text_to_image_R@1'])}  R@5 {percent(m['text_to_image_R@5'])}  "
             f"R@10 {percent(m['text_to_image_R@10'])}  median rank {m['text_to_image_median_rank']:g}")
        return s + (f"\n  {self.skipped.report()}" if self.skipped else "")

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "num_images": self.num_images, "num_texts": self.num_texts,
                "skipped": self.skipped.as_dict(), "skip_report": self.skipped.report() if self.skipped else ""}


def retrieval_from_features(image_features, text_features, text_to_image, image_valid=None, text_valid=None,
                            query_chunk: int = 1024, key_chunk: int = 16384, skipped=None,
                            dataset: str = "", device=None) -> RetrievalResult:
    """Drop unusable images (with their captions) and rejected captions, then rank by cosine similarity (rows
    that are not unit length are normalised: ``encode_image``/``encode_text`` give unnormalised features by
    default, and their dot products ranked otherwise)."""
    t2i = torch.as_tensor(np.asarray(text_to_image), dtype=torch.long)
    image_features, text_features = as_tensor(image_features, "image_features"), as_tensor(text_features,
                                                                                          "text_features")
    ni = image_features.shape[0]
    if text_features.shape[0] != len(t2i):
        raise ValueError(f"text_to_image has {len(t2i)} entries for {text_features.shape[0]} texts")
    iv, tv = row_mask(image_valid, ni, "image_valid"), row_mask(text_valid, len(t2i), "text_valid")
    named = t2i[tv]  # a caption marked unusable (text_valid) may name no image (-1): it is dropped
    if len(named) and (int(named.min()) < 0 or int(named.max()) >= ni):  # -1 indexed the last image below
        raise ValueError(f"text_to_image refers to an image outside 0..{ni - 1} (values {int(named.min())}.."
                         f"{int(named.max())}); mark a caption of no image unusable with text_valid=")
    tv = tv & iv[t2i.clamp(0, ni - 1)] if ni else torch.zeros_like(tv)
    skipped = skipped or SkipCounter()
    captionless = iv.clone()
    captionless[t2i[tv]] = False
    if int(captionless.sum()):
        skipped.add("image_without_usable_caption", n=int(captionless.sum()))
    iv = iv & ~captionless
    new_id = torch.cumsum(iv.long(), 0) - 1
    # (all rows usable, the usual case: the features themselves, not a copy of each matrix beside them)
    img = _unit_rows(image_features if bool(iv.all()) else image_features[iv])
    txt = _unit_rows(text_features if bool(tv.all()) else text_features[tv])
    check_no_zero_rows(img.float(), None, "image_features")
    check_no_zero_rows(txt.float(), None, "text_features")
    mapping = new_id[t2i[tv]]
    i2t, t2i_r = retrieval_ranks(img, txt, mapping, query_chunk=query_chunk, key_chunk=key_chunk, device=device)
    metrics = retrieval_metrics(i2t, t2i_r, num_images=int(iv.sum()), num_texts=int(tv.sum()))
    return RetrievalResult(metrics, i2t, t2i_r, mapping, int(iv.sum()), int(tv.sum()), skipped, dataset)


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``features`` as they are when every row is unit length (what the evaluators pass: bit for bit the same
    ranks), else L2-normalised in float32."""
    if not len(features):
        return features
    norms = features.float().norm(dim=1)
    # within float32 rounding only: rows of norm 1.0009 (fp16 or bf16 embeddings stored) ranked by dot product,
    # a caption of cosine 0.5000 above one of 0.5004
    if bool(((norms - 1).abs() <= 1e-6).all()):
        return features
    return unit_rows(features)


def evaluate_retrieval(model, tokenizer, dataset, *, transform=None, batch_size: int = 64,
                       text_batch_size: int = 256, device=None, num_workers: int = 0, progress: bool = True,
                       query_chunk: int = 1024, key_chunk: int = 16384, image_features=None) -> RetrievalResult:
    """R@1/5/10 and median rank both ways on a retrieval :class:`~kizuna.eval.datasets.EvalDataset`
    (images and captions encoded in batches, sharded under torchrun)."""
    if dataset.task != "retrieval":
        raise ValueError(f"{dataset.name} is a {dataset.task} dataset; retrieval needs captions")
    model = getattr(model, "module", model)
    captions = dataset.captions
    texts = [t for caps in captions for t in caps]
    text_to_image = torch.repeat_interleave(torch.arange(len(captions)),
                                            torch.tensor([len(c) for c in captions], dtype=torch.long))
    feats = image_features or encode_images(model, dataset, transform=transform, batch_size=batch_size,
                                            device=device, num_workers=num_workers, progress=progress,
                                            desc=f"retrieval {dataset.name}: images")
    tf = encode_texts_sharded(model, tokenizer, texts, batch_size=text_batch_size, device=device, progress=progress,
                              desc=f"retrieval {dataset.name}: captions")
    skipped = SkipCounter()
    skipped.update(dataset.skips)
    skipped.update(feats.skips)
    skipped.update(tf.skips)
    return retrieval_from_features(feats.features, tf.features, text_to_image, feats.valid, tf.valid,
                                   query_chunk=query_chunk, key_chunk=key_chunk, skipped=skipped,
                                   dataset=dataset.name, device=device or next(model.parameters()).device)
