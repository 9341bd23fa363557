"""Image and text encoding throughput: kizuna vs HF ``transformers.CLIPModel`` with identical weights.

ViT-B/32 and ViT-B/16 (OpenAI shapes), batch 1 and 32, fp32, ``torch.inference_mode()``. Images are
random pixel tensors (preprocessing excluded: it is the same work for both); texts are 77-token batches
of real Flickr8k captions tokenized by kizuna (synthetic captions if the shared data is absent). The text
tower of ViT-B/16 has the same shape as ViT-B/32's, so texts are measured once, on the B/32 pair.

"kizuna" is kizuna as shipped: on the CPU in fp32 its linears run on the GEMM library chosen for the CPU
(``kizuna.models.layers.GEMM``: oneDNN on AMD, MKL on Intel) and, without an autograd graph, each block
fuses bias, activation and residual adds into the GEMMs. A third contender is the *same* model instance
as a plain PyTorch model (``common.plain_linears``: every linear is ``F.linear``, i.e. MKL sgemm, blocks
unfused); it is timed in the same interleaving and shows what kizuna's GEMM and fusion choices are worth
together. A fourth (where the oneDNN op exists) is the same instance on the other library, still fused
(``common.other_gemm``): what the choice of library alone is worth on this machine.

For texts a fourth contender is the same instance with its padding trim off (``common.padding_kept``):
kizuna's causal text tower runs a batch only up to its last end-of-text token (the positions after
it cannot change the pooled feature), HF runs all 77; the column shows what the trim is worth.

One more contender, on both towers, is the same instance with its last block run for every token
(``common.last_block_full``): a pooled tower reads one token of its last block (the class token, the
end-of-text token), so kizuna runs that block's query, attention, projection and MLP for that token only
(``Block.forward_rows``; keys and values still for all tokens). The column shows what that is worth.
"""
from __future__ import annotations

import contextlib

import torch

from .common import (FULL_LABEL, PAD_LABEL, PLAIN_LABEL, Settings, build_pair, caption_source, faults_text,
                     hf_attention, inner_for, interleaved, last_block_full, md_table, onednn_usable, other_gemm,
                     other_label, padding_kept, plain_linears, pooled, positions_run, shipped_note, spread_text, within,
                     with_plain_linears)

NAME = "encode"
TITLE = "Encoding throughput vs Hugging Face CLIPModel"
TARGET = 1.2
LABELS = {"kizuna": "kizuna", "hf": "HF", "kizuna_mkl": PLAIN_LABEL, "kizuna_pad": PAD_LABEL,
          "kizuna_full": FULL_LABEL, "kizuna_other": other_label()}


def _texts(n: int) -> torch.Tensor:
    from kizuna.data.tokenizer import ClipTokenizer

    captions, _ = caption_source()
    return ClipTokenizer(77)(captions[:n])


def run(s: Settings) -> dict:
    variants = ["ViT-B/32"] if s.quick else ["ViT-B/32", "ViT-B/16"]
    batches = [1, 4] if s.quick else [1, 32]
    big = max(batches)
    _, source = caption_source()
    tokens = _texts(big)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(big, 3, 224, 224, generator=g)
    both = onednn_usable()  # the other library can run here

    rows, data, targets, parity = [], [], [], []
    attn = "?"
    for variant in variants:
        s.log(f"[encode] building {variant} (HF random init -> save_pretrained -> kizuna.create_model)")
        k, hf = build_pair(variant)
        attn = hf_attention(hf)
        towers = ["image", "text"] if variant == "ViT-B/32" else ["image"]
        with torch.inference_mode():
            ref_i = pooled(hf.get_image_features(pixel_values=pixels[:2]))
            ref_t = pooled(hf.get_text_features(input_ids=tokens[:2]))

            def check(name, context, image=True):
                """Largest differences from HF's features of ``k`` inside ``context`` (images too unless not ``image``)."""
                with context:
                    di = (k.encode_image(pixels[:2]) - ref_i).abs().max().item() if image else None
                    dt = (k.encode_text(tokens[:2]) - ref_t).abs().max().item()
                parity.append((variant, name, di, dt))

            check("kizuna", contextlib.nullcontext())
            check("kizuna_mkl", plain_linears())
            if both:
                check("kizuna_other", other_gemm())
            check("kizuna_pad", padding_kept(k), image=False)
            check("kizuna_full", last_block_full(k))
            kept = {b: positions_run(k, tokens[:b]) for b in batches}
            for tower in towers:
                for b in batches:
                    if tower == "image":
                        x = pixels[:b]
                        kfn = lambda x=x: k.encode_image(x)
                        fns = {"kizuna": kfn, "hf": lambda x=x: pooled(hf.get_image_features(pixel_values=x)),
                               "kizuna_mkl": with_plain_linears(kfn), "kizuna_full": within(last_block_full, kfn, k)}
                    else:
                        x = tokens[:b]
                        kfn = lambda x=x: k.encode_text(x)
                        fns = {"kizuna": kfn, "hf": lambda x=x: pooled(hf.get_text_features(input_ids=x)),
                               "kizuna_mkl": with_plain_linears(kfn), "kizuna_pad": within(padding_kept, kfn, k),
                               "kizuna_full": within(last_block_full, kfn, k)}
                    if both:
                        fns["kizuna_other"] = within(lambda _: other_gemm(), kfn, k)
                    inner = inner_for(fns["hf"], 1.0) if b == 1 else 1
                    s.log(f"[encode] {variant} {tower} batch {b} ({inner} call(s) per timed run)")
                    t = interleaved(fns, s.reps, s.warmup, inner=inner, items=b, max_reps=s.max_reps)
                    r = t["kizuna"].rate / t["hf"].rate
                    unit = "images/s" if tower == "image" else "texts/s"
                    row = [variant, f"{tower} ({unit})", b, f"{t['kizuna'].rate:.2f}", f"{t['hf'].rate:.2f}",
                           f"**{r:.2f}x**"]
                    m = t["kizuna_mkl"]
                    row += [f"{m.rate:.2f} ({m.rate / t['hf'].rate:.2f}x)", f"{t['kizuna'].rate / m.rate:.2f}x",
                            " / ".join(spread_text(x) for x in (t["kizuna"], t["hf"], m)),
                            " / ".join(faults_text(t[n]) for n in ("kizuna", "hf"))]
                    p = t.get("kizuna_pad")
                    row += [f"{p.rate:.2f} ({p.rate / t['hf'].rate:.2f}x), {kept[b]} of {x.shape[1]} positions run "
                            "with the trim" if p else "-"]
                    f = t["kizuna_full"]
                    row += [f"{f.rate:.2f} ({f.rate / t['hf'].rate:.2f}x); pruning worth {t['kizuna'].rate / f.rate:.2f}x"]
                    o = t.get("kizuna_other")
                    row += [f"{o.rate:.2f} ({o.rate / t['hf'].rate:.2f}x); kizuna ÷ it {t['kizuna'].rate / o.rate:.2f}x"
                            if o else "-"]
                    rows.append(row)
                    data.append({"variant": variant, "tower": tower, "batch": b, "inner": inner, "ratio": round(r, 4),
                                 "ratio_onednn_vs_mkl": round(t["kizuna"].rate / m.rate, 4),  # shipped / plain
                                 "ratio_vs_other_gemm": round(t["kizuna"].rate / o.rate, 4) if o else None,
                                 "ratio_pruned_vs_full": round(t["kizuna"].rate / f.rate, 4),
                                 "positions_run": kept[b] if tower == "text" else None,
                                 "timings": {n: v.as_dict() for n, v in t.items()}})
                    if b == big:
                        targets.append({"target": f"encode: kizuna >= {TARGET}x HF, {variant} {tower} batch {b}",
                                        "value": f"{r:.2f}x", "met": r >= TARGET})
        del k, hf  # frees this pair before the next one is built

    headers = ["model", "input", "batch", "kizuna", "HF", "kizuna ÷ HF", f"{PLAIN_LABEL} (÷ HF)",
               "kizuna ÷ plain", "spread kizuna / HF / plain", "page faults per call kizuna / HF", f"{PAD_LABEL} (÷ HF)",
               f"{FULL_LABEL} (÷ HF)", f"{other_label()} (÷ HF)"]
    table = md_table(headers, rows, align="llrrrrrrrrrrr")
    ptable = md_table(
        ["model", "contender", "max abs diff vs HF, image features", "max abs diff vs HF, text features"],
        [[v, LABELS[n], "-" if di is None else f"{di:.1e}", f"{dt:.1e}"] for v, n, di, dt in parity], align="llrr")
    notes = [
        f"HF attention implementation: `{attn}` (HF's default, left as is); kizuna uses "
        "`F.scaled_dot_product_attention` too.",
        f"Texts: 77-token batches from {source}. Images: random 224x224 pixel tensors.",
        "kizuna's causal text tower runs a batch only up to its last end-of-text token (`TextTransformer."
        "trim_padding`: the positions after it cannot change the pooled feature, so the output is the same, see "
        f"the parity table); HF runs all 77. \"{PAD_LABEL}\" is the same instance with the trim off, "
        "interleaved with the others: the image-tower rows and that column compare like with like.",
        "Rates in items per second (median of the timed runs); batch-1 runs repeat the call to last about 1 s.",
        "Page faults: median minor page faults per call. A large fresh buffer is zero-filled by the OS on first "
        "touch, and whether a call gets fresh memory depends on where glibc's allocator stands in this process "
        "rather than on the model. kizuna reuses its large buffers (`layers._scratch`); HF allocates per call.",
        f"\"{FULL_LABEL}\" is the same instance with `prune_last_block` off on both towers: the last block runs for "
        "every token, as HF runs it; kizuna as shipped runs it for the pooled token only (exact, see the parity "
        "table). \"pruning worth\" is kizuna over that contender.",
        shipped_note() + f" \"{PLAIN_LABEL}\" is the same model instance as a plain PyTorch model "
        "(`common.plain_linears`: `F.linear`, MKL sgemm, unfused blocks, as HF runs), interleaved with the others; "
        "\"kizuna ÷ plain\" is what kizuna's GEMM and fusion choices are worth together. "
        + (f"\"{other_label()}\" is the same instance on the other GEMM library, still fused: \"kizuna ÷ it\" is "
           "what the choice of library alone is worth here. " if both else "(oneDNN is unavailable here "
           "(`kizuna.models.layers.ONEDNN` is False), so there is no other library to compare.) ")
        + "The parity table shows every contender computes HF's numbers.",
    ]
    return {"title": TITLE, "md": table + "\n\nSame numbers (identical weights):\n\n" + ptable, "notes": notes,
            "targets": targets, "data": {"rows": data, "attn_implementation": attn,
                                         "parity": [{"variant": v, "contender": n, "image": di, "text": dt}
                                                    for v, n, di, dt in parity]}}
