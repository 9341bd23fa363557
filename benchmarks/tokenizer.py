"""Tokenizer throughput on the Flickr8k captions: kizuna's ClipTokenizer vs HF's fast CLIPTokenizer vs a
plain-Python BPE (OpenAI's ``simple_tokenizer`` algorithm, written out here).

Every contender turns the whole caption list into a ``[N, 77]`` id tensor (the work a training step
does), timed alternately. The plain-Python tokenizer keeps its per-word cache between calls as OpenAI's
does (a long-lived tokenizer in a training job); a cold-cache row (a fresh instance per call) is also
shown. kizuna cleans every caption in Python (ftfy, html-unescape, whitespace) as OpenAI does; HF's
tokenizer only normalises in Rust (NFC, whitespace, lower-case). The ftfy share is measured separately.
"""
from __future__ import annotations

import gzip
import html
import json
import tempfile
import types
from functools import lru_cache
from importlib import resources
from pathlib import Path

import regex as re
import torch

from .common import Settings, caption_source, interleaved, md_table, spread_text

NAME = "tokenizer"
TITLE = "Tokenizer throughput"
CONTEXT = 77
N_MERGES = 49152 - 256 - 2


# ================================================================================================
# Plain-Python BPE: OpenAI CLIP's simple_tokenizer algorithm (byte table, greedy lowest-rank merges,
# per-word cache), own code so the comparison does not depend on the `clip` package.
# ================================================================================================
@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    pairs = set()
    prev = word[0]
    for ch in word[1:]:
        pairs.add((prev, ch))
        prev = ch
    return pairs


def _vocab_lines() -> list[str]:
    path = resources.files("kizuna.data").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz")
    with path.open("rb") as f:
        return gzip.decompress(f.read()).decode("utf-8").split("\n")


def clip_vocab_and_merges() -> tuple[list[str], list[tuple[str, ...]]]:
    """OpenAI's vocabulary order (bytes, bytes+</w>, merges, SOT, EOT) and its 48,894 merges."""
    merges = [tuple(m.split()) for m in _vocab_lines()[1 : N_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return vocab, merges


def _basic_clean(text: str) -> str:
    import ftfy

    text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def _whitespace_clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class PythonBPE:
    """OpenAI's SimpleTokenizer (encode side) with its per-word cache."""

    def __init__(self, vocab: list[str], merges: list[tuple[str, ...]]):
        self.byte_encoder = bytes_to_unicode()
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
        self.pat = re.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE,
        )
        self.sot, self.eot = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids = []
        text = _whitespace_clean(_basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def __call__(self, texts: list[str], context_length: int = CONTEXT) -> torch.Tensor:
        """clip.tokenize(texts, truncate=True)."""
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot] + self.encode(t) + [self.eot]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot
            out[i, : len(ids)] = torch.tensor(ids)
        return out


# ================================================================================================
# HF fast tokenizer from the same vocabulary (vocab.json + merges.txt, as OpenAI's files convert)
# ================================================================================================
def hf_fast_tokenizer(folder: Path):
    from transformers import CLIPTokenizerFast

    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    return CLIPTokenizerFast.from_pretrained(str(folder))


def _until_eot(row: torch.Tensor, eot: int) -> list[int]:
    ids = row.tolist()
    return ids[: ids.index(eot) + 1] if eot in ids else ids


# ================================================================================================
def openai_clean(text: str, for_ids: bool = False) -> str:  # (the signature of kizuna's clean_text, which it replaces)
    """OpenAI's cleaning with ftfy on every text (kizuna's ``clean_text`` may skip ftfy for plain ASCII)."""
    return _whitespace_clean(_basic_clean(text)).lower()


def run(s: Settings) -> dict:
    import ftfy

    import kizuna.data.tokenizer as ktok
    from kizuna.data.tokenizer import ClipTokenizer

    captions, source = caption_source()
    if s.quick:  # with every caption that takes ftfy's path (an "&"), which the first 1,000 hold none of
        captions = captions[:1000] + [c for c in captions[1000:] if not ktok._FTFY_NOOP.fullmatch(c)]
    n = len(captions)
    s.log(f"[tokenizer] {n:,} captions from {source}")
    kz = ClipTokenizer(CONTEXT)
    kz_rust = ClipTokenizer(CONTEXT)
    kz_rust._words = None  # the Rust BPE on every whole text: kizuna without its word cache
    never = ktok._stdre.compile(r"(?!)")  # no text is "plain": every one is cleaned on its own
    vocab, merges = clip_vocab_and_merges()
    py = PythonBPE(vocab, merges)
    tmp = tempfile.TemporaryDirectory(prefix="kizuna-bench-tok-")
    hf = hf_fast_tokenizer(Path(tmp.name))

    def patched(**attrs):
        """kizuna's tokenizer call with module attributes swapped for the call (``src`` is not touched)."""
        def call():
            saved = {a: getattr(ktok, a) for a in attrs}
            for a, v in attrs.items():
                setattr(ktok, a, v)
            try:
                return kz(captions)
            finally:
                for a, v in saved.items():
                    setattr(ktok, a, v)
        return call

    contenders = {
        "kizuna": lambda: kz(captions),
        "hf_fast": lambda: hf(captions, padding="max_length", max_length=CONTEXT, truncation=True,
                              return_tensors="pt")["input_ids"],
        "python_bpe": lambda: py(captions),
        "python_bpe_cold": lambda: PythonBPE(vocab, merges)(captions),
        # a fresh word cache per call; the Rust BPE under it is one per process (lru_cache), its own cache warm
        "kizuna_cold": lambda: ClipTokenizer(CONTEXT)(captions),
        "kizuna_rust": lambda: kz_rust(captions),
        # ftfy on every caption, as OpenAI (so the batched plain-text path is off too)
        "kizuna_ftfy_all": patched(clean_text=openai_clean, _PLAIN_TEXT=never),
        # cleaning without ftfy's work: an identity fix_text (ftfy=None is refused for a text it might change)
        "kizuna_no_ftfy": patched(ftfy=types.SimpleNamespace(fix_text=lambda text: text)),
        "ftfy_only": lambda: [ftfy.fix_text(t) for t in captions],
    }
    t = interleaved(contenders, s.reps, s.warmup, items=n, max_reps=s.max_reps)

    # Do they agree? (ids up to and including EOT: HF pads with EOT, OpenAI/kizuna with 0)
    a, b, c = kz(captions), contenders["hf_fast"](), py(captions)
    d = contenders["kizuna_no_ftfy"]()
    same_rust = int((a == kz_rust(captions)).all(dim=1).sum())
    eot = kz.eot_token_id
    same_hf = sum(_until_eot(a[i], eot) == _until_eot(b[i], eot) for i in range(n))
    same_py = int((a == c).all(dim=1).sum())
    same_noftfy = int((a == d).all(dim=1).sum())
    non_ascii = sum(not x.isascii() for x in captions)
    ftfy_changes = sum(ftfy.fix_text(x) != x for x in captions)
    tmp.cleanup()

    k = t["kizuna"]
    rows = []
    labels = {
        "kizuna": "**kizuna** `ClipTokenizer`, as in `src/` (batched split in Python, word cache over the Rust BPE)",
        "kizuna_cold": "kizuna, cold word cache (a fresh instance per call; the process's one Rust BPE, whose own "
                       "cache stays warm)",
        "kizuna_rust": "kizuna without its word cache (the Rust BPE on every whole caption)",
        "hf_fast": "HF `CLIPTokenizerFast` (same vocab; Rust normaliser, no ftfy)",
        "python_bpe": "plain-Python BPE, OpenAI's algorithm (warm per-word cache, ftfy cleaning)",
        "python_bpe_cold": "plain-Python BPE, cold cache (a fresh instance per call)",
        "kizuna_ftfy_all": "kizuna with `ftfy.fix_text` forced on every caption (OpenAI's cleaning, one caption at a time)",
        "kizuna_no_ftfy": "kizuna with ftfy switched off",
    }
    for name, label in labels.items():
        r = t[name]
        rows.append([label, f"{r.rate:,.0f}", f"{r.median:.3f}", f"{k.rate / r.rate:.2f}x", spread_text(r)])
    table = md_table(["tokenizer", "captions/s", f"s per {n:,}", "kizuna ÷ this (speed ratio)", "spread"], rows)

    # ftfy's share: time with ftfy minus time without it, over the time with it.
    share_default = max(0.0, (k.median - t["kizuna_no_ftfy"].median) / k.median)
    f_all = t["kizuna_ftfy_all"]
    share_all = max(0.0, (f_all.median - t["kizuna_no_ftfy"].median) / f_all.median)
    breakdown = md_table(
        ["where ftfy's time goes", f"s per {n:,} captions", "share of that call"],
        [["`ftfy.fix_text` alone on every caption", f"{t['ftfy_only'].median:.3f}", "-"],
         ["kizuna with ftfy on every caption: ftfy's part (with - without ftfy)",
          f"{f_all.median - t['kizuna_no_ftfy'].median:.3f}", f"{share_all:.0%}"],
         ["kizuna as in `src/`: ftfy's part (with - without ftfy)",
          f"{k.median - t['kizuna_no_ftfy'].median:.3f}", f"{share_default:.0%}"]],
    )
    r_py = k.rate / t["python_bpe"].rate
    r_hf = k.rate / t["hf_fast"].rate
    r_py_all = f_all.rate / t["python_bpe"].rate
    r_hf_all = f_all.rate / t["hf_fast"].rate
    targets = [
        {"target": "tokenizer: kizuna >= 10x plain-Python BPE", "value": f"{r_py:.1f}x", "met": r_py >= 10},
        {"target": "tokenizer: kizuna >= 1x HF fast", "value": f"{r_hf:.2f}x", "met": r_hf >= 1},
    ]
    notes = [
        f"Input: {source}; {'the first 1,000 captions and those ftfy cleans (--quick)' if s.quick else 'all of them'}, one call for the whole "
        f"list; every contender returns a `[N, {CONTEXT}]` LongTensor. The Rust tokenizers use all cores.",
        f"With ftfy forced on every caption (OpenAI's cleaning) kizuna would be {r_py_all:.1f}x the plain-Python BPE "
        f"and {r_hf_all:.2f}x HF fast; ftfy would take {share_all:.0%} of its time.",
        f"ftfy changes {ftfy_changes:,} of the {n:,} captions ({non_ascii:,} contain non-ASCII characters); kizuna "
        f"without ftfy gives the same ids as kizuna for {same_noftfy:,}/{n:,} captions.",
        f"Agreement with kizuna's ids (up to EOT): HF fast {same_hf:,}/{n:,} (HF does not run ftfy or html-unescape), "
        f"plain-Python BPE {same_py:,}/{n:,}; kizuna without its word cache {same_rust:,}/{n:,}.",
        "kizuna joins the plain-ASCII captions (printable, no `&`, no special-token string: ftfy and html-unescape "
        "provably change nothing but whitespace), lower-cases and splits them on whitespace in one call each, looks "
        "each word up in a cache filled by the Rust BPE (one call per new word) and gathers the ids in numpy; other "
        "texts are cleaned one by one and go to Rust whole. \"without its word cache\" is a second instance with "
        "the cache off, interleaved with the others: what the cache is worth.",
    ]
    return {
        "title": TITLE,
        "md": "\n\n".join([table, breakdown]),
        "notes": notes,
        "targets": targets,
        "data": {"captions": n, "source": source, "timings": {k_: v.as_dict() for k_, v in t.items()},
                 "agree_hf": same_hf, "agree_python": same_py, "agree_no_word_cache": same_rust, "agree_no_ftfy": same_noftfy,
                 "non_ascii_captions": non_ascii, "ftfy_changes": ftfy_changes,
                 "ftfy_share_default": round(share_default, 4), "ftfy_share_all": round(share_all, 4),
                 "ratio_vs_python": round(r_py, 3), "ratio_vs_hf": round(r_hf, 3),
                 "ratio_ftfy_all_vs_python": round(r_py_all, 3), "ratio_ftfy_all_vs_hf": round(r_hf_all, 3)},
    }
