"""CLIP byte-level BPE tokenizers on HF `tokenizers` (Rust): OpenAI's vocabulary, or one trained on your text.

Both kinds share one class and differ only in how the `tokenizers.Tokenizer` is built:

- `ClipTokenizer`: OpenAI CLIP's 49,408-token vocabulary (256 byte symbols, the same 256 with `</w>`,
  the first 48,894 merges of `bpe_simple_vocab_16e6.txt.gz`, then `<|startoftext|>`=49406 and
  `<|endoftext|>`=49407). Output ids equal OpenAI's `clip.tokenize` (tested on the 40,455 Flickr8k
  captions, 8,185 CLIP_benchmark prompts and random text). Known differences, all in text no caption
  holds: a literal `<|endoftext|>` or `<|startoftext|>` typed right after punctuation ("dog.<|endoftext|>")
  becomes the special token here, as in HF's tokenizer, where OpenAI's regex BPE-encodes it; letters and
  digits newer than the Unicode tables of Rust's regex engine are split as punctuation; and two quirks of
  OpenAI's case-insensitive regex (an apostrophe before "ſ" read as "'s", U+0345 dropped) are not copied.
  Unlike HF's tokenizer, text is cleaned as OpenAI's is (ftfy, HTML entities unescaped twice), so
  "it's" with a curly apostrophe and "&lt;3" tokenize as OpenAI's do.
- `TrainedBpeTokenizer`: the same recipe (cleaning, pre-tokenizer regex, byte symbols, `</w>` suffix)
  with merges learned from your texts by `train_bpe_tokenizer`. The vocabulary is laid out like CLIP's,
  so `<|endoftext|>` always has the highest id: the text tower pools at the EOT position, and
  `argmax(ids)` finds it.

Calling a tokenizer gives a `[N, context_length]` LongTensor `[SOT, ids..., EOT, 0, 0, ...]`; a text
that is too long is cut so that EOT stays the last token (as `clip.tokenize(truncate=True)`).
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import json
import operator
import os
import re as _stdre
import threading
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

try:  # OpenAI cleans with ftfy (and imports it unconditionally); so do we, and say so where it is missing
    import ftfy
except ImportError:  # a --no-deps install: clean_text refuses a text that ftfy would change, rather than give other ids
    ftfy = None

try:  # OpenAI collapses whitespace with the `regex` module, whose \s differs slightly from `re`'s.
    import regex as _re
except ImportError:  # pragma: no cover - depends on the environment
    import re as _re

__all__ = [
    "SOT_TOKEN",
    "EOT_TOKEN",
    "BpeTokenizer",
    "ClipTokenizer",
    "TextTokenizer",
    "TrainedBpeTokenizer",
    "bytes_to_unicode",
    "clean_text",
    "get_tokenizer",
    "load_tokenizer",
    "tokenizer_from_config",
    "train_bpe_tokenizer",
]

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
_SUFFIX = "</w>"
_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_CLIP_MERGES = 49152 - 256 - 2  # 48,894: the merges OpenAI uses out of the 262,144 in the file
# OpenAI's pattern, minus the two special tokens (they are `tokenizers` added tokens, matched first).
# OpenAI compiles it with IGNORECASE; the text is lower-cased before, so that changes nothing.
_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_WHITESPACE = _re.compile(r"\s+")
# The same patterns for pure-ASCII text in the stdlib `re`, which has no Unicode property lookups and is
# ~3x faster: on ASCII, \p{L} is [A-Za-z], \p{N} is [0-9] and `regex`'s \s is [\t\n\v\f\r ] (the stdlib's
# also takes \x1c-\x1f). Tested against `regex` and the Rust split.
_ASCII_WHITESPACE = _stdre.compile(r"[\t\n\x0b\x0c\r ]+" if _re is not _stdre else r"\s+")
_ASCII_SPLIT = _stdre.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[A-Za-z]+|[0-9]|[^\t\n\x0b\x0c\r A-Za-z0-9]+")
_WORD_CACHE_LIMIT = 200_000  # chunks (words with their punctuation); cleared when full: bounded memory
# and by what they hold (their characters and ids): web captions' base64 blobs and URL dumps are chunks of 10^4-10^5
# characters each, and 200,000 of them came to some 13 GB in every loader worker before the count was reached
_WORD_CACHE_BYTES = 64 << 20
_OVERFLOW_MODES = ("truncate", "error")
# and one token of text: at 2 every caption and prompt became [start, end], the loss sat at ln B and zero-shot
# always predicted the first class
_ROOM = "room for start and end tokens and one of text"
MIN_CONTEXT_LENGTH = 3


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP map of the 256 byte values to printable characters (printable bytes map to themselves)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# Printable ASCII (plus tab/newline/CR) without '&': ftfy.fix_text provably leaves it unchanged up to
# whitespace, which is collapsed below anyway, so it can skip ftfy (most of the cleaning time).
_FTFY_NOOP = _stdre.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")
# A "plain" text is such ASCII and holds no special-token string: its cleaning is only lower-casing (the
# split drops whitespace anyway), and its only whitespace (space, \t, \n, \r) is what `str.split()` and
# the split pattern agree on, so it can take the batched word-cache path of `BpeTokenizer._encode_plain`.
_PLAIN_TEXT = _FTFY_NOOP


def clean_text(text: str, for_ids: bool = False) -> str:
    """OpenAI's cleaning: ftfy, html-unescape twice, collapse whitespace, strip, lower-case. ``for_ids``: the text
    becomes CLIP BPE token ids, which without ftfy are not OpenAI's: refused where ftfy is missing (the other uses,
    blank-caption filters and repeated-name checks, go on without it)."""
    if not _FTFY_NOOP.fullmatch(text) and (ftfy is not None or for_ids):
        if ftfy is None:  # without it "cafÃ© au lait" was 9 tokens, not OpenAI's 6, and nothing said so
            from kizuna.extras import MissingExtra

            raise MissingExtra(f"cleaning the text {text[:40]!r} as OpenAI's CLIP tokenizer does needs the ftfy "
                               "package (a kizuna dependency, missing here: a --no-deps install?): "
                               "pip install 'ftfy>=6'")
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return (_ASCII_WHITESPACE if text.isascii() else _WHITESPACE).sub(" ", text).strip().lower()


def checked_texts(texts, on_overflow: str, bound: bool = True) -> list[str]:
    """The input checks every tokenizer's ``__call__`` shares: a known ``on_overflow`` mode, and ``texts`` as
    one str or a list/tuple of str (bytes, None or a number is named, not tokenized). ``bound``: cut very long
    texts to their beginning for truncation (:func:`_bounded`, measured by CLIP's cleaning; a tokenizer that
    cleans otherwise cuts them itself)."""
    if on_overflow not in _OVERFLOW_MODES:
        raise ValueError(f"on_overflow must be one of {_OVERFLOW_MODES}, got {on_overflow!r}")
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, bytes) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is not text: expected a str, got {type(t).__name__}")
    texts = [_no_lone_surrogates(t) for t in texts]
    return [_bounded(t) for t in texts] if on_overflow == "truncate" and bound else texts


# A text to be cut to a context of tokens needs only its beginning: a 50 MB caption (a tar member, a CSV field) was
# cleaned and encoded whole, 6 s and 1.8 GB each time it was drawn, for 77 tokens. It is cut where ftfy starts a
# piece of it anyway, once the beginning cleans to this many characters or more (a token is at least one character:
# over a thousand characters a token for any context up to 1,024 tokens), so that the tokens kept are the ones the
# whole text gives.
MAX_TRUNCATED_CHARS = 1 << 20
# ftfy fixes a text a piece at a time: each line, and a line longer than this in pieces of this length
_FTFY_PIECE = ftfy.TextFixerConfig().max_decode_length if ftfy is not None else MAX_TRUNCATED_CHARS
# Runs of characters that make no token, shortened where a text's first million characters clean to little (a
# million spaces or NBSPs before the words; ftfy took minutes over 50 MB of them). A run keeps its first character
# (ftfy reads "Ã\xa0" as "à"), then a line break if it holds one (ftfy fixes text a line at a time; \r and U+2028
# are not where it splits), else a space if it holds whitespace that ftfy keeps, else nothing: ftfy deletes the
# rest (the controls, byte-order marks, U+206A-206F, U+FFF9-FFFC: "dog\x1c\x1ccat" is "dogcat"). Not ESC, which
# starts a terminal escape ftfy removes whole, nor C1 controls (\x85 is ftfy's "…").
_SHORTENED_RUNS = _stdre.compile("[\x00-\x08\t\n\x0b\x0c\r\x0e-\x1a\x1c-\x1f \x7f\xa0\u1680\u2000-\u200a\u2028"
                                 "\u2029\u202f\u205f\u3000\u206a-\u206f\ufeff\ufff9-\ufffc]{2,}")
_KEPT_SPACE = _stdre.compile("[\t\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _shortened(run: _stdre.Match) -> str:
    text = run.group()
    rest = text[1:]
    return text[0] + ("\n" if "\n" in rest else " " if _KEPT_SPACE.search(rest) else "")


def _piece_start(text: str, end: int) -> int:
    """The last place at or before ``end`` where ftfy starts a piece of ``text``: a line's start, or a multiple
    of its piece length into a longer line. ftfy fixes each piece alone (HTML unescaping stops for good at the
    first piece holding '<'), so a beginning cut there is fixed exactly as in the whole text."""
    line = text.rfind("\n", 0, end) + 1
    return line + (end - line) // _FTFY_PIECE * _FTFY_PIECE


def _bounded(text: str) -> str:
    """``text``'s beginning for a tokenizer that keeps a context's worth of tokens: the text itself up to
    MAX_TRUNCATED_CHARS; else cut where ftfy starts a piece, once that beginning cleans to MAX_TRUNCATED_CHARS // 2
    characters (measured by cleaning it: a count of characters took byte-order marks, terminal escapes or "&nbsp;"
    for words), which keeps exactly the tokens the whole text gives. Where the first million characters clean to
    less (whitespace or deleted characters before the words), runs of those are shortened first and the text is
    cleaned as one of its own; the beginning then grows in proportion to what it cleans to (doubling cleaned
    50 MB of "&nbsp;" six times over)."""
    if len(text) <= MAX_TRUNCATED_CHARS:
        return text
    head = _piece_start(text, MAX_TRUNCATED_CHARS)
    head_cleaned = len(clean_text(text[:head])) if head > 0 else 0
    if head_cleaned >= MAX_TRUNCATED_CHARS // 2:  # the common case: exact
        return text[:head]
    # the beginning's whole pieces are kept as they are (exact); runs are shortened after them only, where a
    # moved piece boundary cannot reach them ("<" moved into the first piece turned its HTML unescaping off).
    # The head's cleaned length is measured once, the rest's alone (cleaning the head again at every growth made
    # the cut slower than the whole text for entity-encoded junk)
    end = 2 * MAX_TRUNCATED_CHARS
    while end < len(text):
        space = text.rfind(" ", end // 2, end)  # at a word's end where there is one
        rest = _SHORTENED_RUNS.sub(_shortened, text[head:max(space, head) if space > 0 else end])
        cleaned = head_cleaned + len(clean_text(rest))
        if cleaned >= MAX_TRUNCATED_CHARS // 2:
            return text[:head] + rest
        end = max(2 * end, end * (MAX_TRUNCATED_CHARS // 2) // max(cleaned, 1))
    return text[:head] + _SHORTENED_RUNS.sub(_shortened, text[head:])


_SURROGATE = _stdre.compile("[\ud800-\udfff]")


def _no_lone_surrogates(text: str) -> str:
    """Lone surrogates (what Python makes of bytes in argv or a file name that are not UTF-8: a Latin-1 "café" in
    --labels) as U+FFFD, which the CLIP tokenizer's ftfy makes of them too: SigLIP's SentencePiece and MiniLM's
    tokenizer failed on them deep inside (a RuntimeError "Unable to cast", a TypeError). A pair of them (a
    character above U+FFFF kept as its two UTF-16 halves: a JSON-escaped emoji) is that character, as ftfy's
    fix_surrogates makes it: each half became U+FFFD, and the ids differed from OpenAI's and from ``encode``."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    # the pairs joined through UTF-16, whose decoder replaces the halves still alone
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def checked_context_length(value, minimum: int, room: str, setting: str = "context_length") -> int:
    """``value`` as an int of at least ``minimum`` (``room`` says why), else a ValueError naming ``setting``:
    "77" and None were a TypeError comparing with an int, and 77.9 was cut to 77 without a word."""
    try:
        if isinstance(value, bool):
            raise TypeError
        ctx = operator.index(value)  # an int, or a numpy/torch integer; not a str, None or a float
    except TypeError:
        raise ValueError(f"{setting} must be an integer >= {minimum} ({room}), got {value!r} "
                         f"({type(value).__name__})") from None
    if ctx < minimum:
        raise ValueError(f"{setting} must be >= {minimum} ({room}), got {ctx}")
    return ctx


def _snippet(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="removed", invert=True),
            # use_regex=False: the split above already made CLIP's pieces; only map bytes to symbols.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _build_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """A CLIP-style byte-level BPE `Tokenizer` (same construction as HF's CLIPTokenizer, no normaliser:
    cleaning happens in Python, exactly as OpenAI does it)."""
    model = BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix=_SUFFIX, fuse_unk=False)
    tok = Tokenizer(model)
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(SOT_TOKEN, special=True), AddedToken(EOT_TOKEN, special=True)])
    # Only for other users of the JSON (kizuna adds SOT/EOT itself, with add_special_tokens=False).
    sot, eot = tok.token_to_id(SOT_TOKEN), tok.token_to_id(EOT_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT_TOKEN} $A {EOT_TOKEN}", special_tokens=[(SOT_TOKEN, sot), (EOT_TOKEN, eot)]
    )
    return tok


def _clip_layout_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout: 256 byte symbols, the same with `</w>`, one token per merge, SOT, EOT."""
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + _SUFFIX for s in symbols] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]:
        vocab.setdefault(token, len(vocab))  # a merge may re-create an existing token: keep the first id
    return vocab


@functools.lru_cache(maxsize=1)
def _openai_tokenizer() -> Tokenizer:
    path = resources.files("kizuna.data").joinpath("assets", _VOCAB_FILE)
    with path.open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_CLIP_MERGES + 1]]  # line 0 is a version header
    return _build_tokenizer(_clip_layout_vocab(merges), merges)


def _is_kizuna_layout(tokenizer: Tokenizer) -> bool:
    """True if `tokenizer` splits like `_pre_tokenizer()`, has no normaliser and only SOT/EOT as added
    tokens: then encoding piece by piece gives exactly its ids (a JSON loaded from elsewhere may not)."""
    try:
        added = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        return (tokenizer.normalizer is None and added <= {SOT_TOKEN, EOT_TOKEN}
                and tokenizer.pre_tokenizer is not None
                and tokenizer.pre_tokenizer.__getstate__() == _pre_tokenizer().__getstate__())
    except AttributeError:  # an older `tokenizers` without these accessors: keep the plain path
        return False


def _ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of `arange(s, s + n)` for each (s, n) pair, without a Python loop."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(ends) else 0)


def _flatten(id_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(all ids back to back, each list's length) of a list of id lists."""
    lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    return np.fromiter(itertools.chain.from_iterable(id_lists), np.int64, int(lengths.sum())), lengths


class _ChunkIds:
    """Token ids of whitespace-free chunks of text, stored flat so many lookups are one numpy gather.

    The word cache of `BpeTokenizer`: `index[chunk]` is a row; row r's ids are
    `ids[start[r] : start[r] + length[r]]`. Arrays grow by doubling, so adding rows is amortised O(1).
    Row 0 is the empty separator that marks text boundaries in a joined batch. Rows are only ever
    appended, so a row number stays valid for the cache's life.

    Thread-safe: threads may share one tokenizer (HF's is thread-safe, and the Rust BPE releases the GIL),
    and two unlocked `add`s wrote the same rows - wrong ids, for that call and every later one. `lock`
    guards every read and write; it is not held while the caller runs the BPE on the new words.
    """

    SEPARATOR = "\x00"  # never in a text the fast path takes (see `_PLAIN_TEXT`), so never a real chunk

    def __init__(self):
        self.lock = threading.Lock()
        self.index: dict[str, int] = {self.SEPARATOR: 0}
        self.start = np.zeros(1024, dtype=np.int64)
        self.length = np.zeros(1024, dtype=np.int64)
        self.ids = np.zeros(4096, dtype=np.int64)
        self.n_ids = 0
        self.chars = 0  # of the chunks held (the index's keys)

    def __len__(self) -> int:
        return len(self.index) - 1

    def full(self) -> bool:
        return len(self) > _WORD_CACHE_LIMIT or self.chars + 8 * self.n_ids > _WORD_CACHE_BYTES

    @staticmethod
    def _fit(a: np.ndarray, size: int) -> np.ndarray:
        if size <= len(a):
            return a
        out = np.zeros(max(size, 2 * len(a)), dtype=a.dtype)
        out[: len(a)] = a
        return out

    def __getstate__(self) -> dict[str, Any]:  # a Lock does not pickle (spawn workers, deepcopy): copies get their own
        with self.lock:
            return {**self.__dict__, "lock": None, "index": dict(self.index)}  # a snapshot, not one being added to

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def rows(self, chunks: list[str]) -> np.ndarray | None:
        """The row of each chunk, or None when some chunk is not cached yet."""
        with self.lock:
            try:
                return np.asarray(list(map(self.index.__getitem__, chunks)), dtype=np.int64)
            except KeyError:
                return None

    def missing(self, chunks: list[str]) -> list[str]:
        """The distinct chunks not cached yet."""
        with self.lock:
            return list(set(chunks).difference(self.index))

    def add(self, chunks: list[str], ids: list[list[int]]) -> None:
        with self.lock:
            # another thread may have added some of them while this one ran the BPE: add each chunk once
            new = [i for i, c in enumerate(chunks) if c not in self.index]
            if len(new) < len(chunks):
                chunks, ids = [chunks[i] for i in new], [ids[i] for i in new]
            rows, (flat, lengths) = len(self.index), _flatten(ids)
            self.start = self._fit(self.start, rows + len(chunks))
            self.length = self._fit(self.length, rows + len(chunks))
            self.length[rows : rows + len(chunks)] = lengths
            self.start[rows : rows + len(chunks)] = self.n_ids + np.cumsum(lengths) - lengths
            self.ids = self._fit(self.ids, self.n_ids + len(flat))
            self.ids[self.n_ids : self.n_ids + len(flat)] = flat
            self.n_ids += len(flat)
            self.chars += sum(map(len, chunks))
            self.index.update(zip(chunks, range(rows, rows + len(chunks))))

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(all ids of `rows` in order, each row's length)."""
        with self.lock:
            lengths = self.length[rows]
            return self.ids[_ragged_positions(self.start[rows], lengths)], lengths


class TextTokenizer(Protocol):
    """What every tokenizer :func:`get_tokenizer` returns can do: CLIP's BPE (:class:`BpeTokenizer`, which also
    encodes and decodes), SigLIP's sentencepiece and MiniLM's WordPiece (ids and a mask, ``[N, 2, L]``). The
    returns said BpeTokenizer, whose ``decode`` the other two lack."""

    context_length: int

    def __call__(self, texts, context_length: int | None = None) -> torch.Tensor: ...

    def to_config(self) -> dict[str, Any]: ...


class BpeTokenizer:
    """Shared call API of the CLIP-style BPE tokenizers; subclasses only build `self.tokenizer`."""

    pad_token_id = 0  # as OpenAI: padding is id 0, masked out by pooling at the EOT position

    def __init__(self, tokenizer: Tokenizer, context_length: int = 77):
        self.context_length = checked_context_length(context_length, MIN_CONTEXT_LENGTH, _ROOM)
        self.tokenizer = tokenizer
        self.sot_token_id = tokenizer.token_to_id(SOT_TOKEN)
        self.eot_token_id = tokenizer.token_to_id(EOT_TOKEN)
        if self.sot_token_id is None or self.eot_token_id is None:
            raise ValueError(f"tokenizer lacks the special tokens {SOT_TOKEN} / {EOT_TOKEN}")
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        # Word cache in front of the Rust BPE for plain ASCII texts (see `_encode_plain`); only for
        # tokenizers built the way kizuna builds them, where it provably gives the same ids.
        self._words: _ChunkIds | None = _ChunkIds() if _is_kizuna_layout(tokenizer) else None

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens and without truncation."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts (cleaned as OpenAI does, BPE in Rust behind a word cache); no start/end
        tokens, no truncation."""
        ids, lengths = self._encode_texts(texts)
        return [a.tolist() for a in np.split(ids, np.cumsum(lengths)[:-1])] if len(lengths) else []

    def _encode_rust(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # fast: no offsets
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def _encode_texts(self, texts: Sequence[str], require_text: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(the ids of all `texts` back to back, each text's id count). Plain texts go through the batched
        word cache, the others are cleaned one by one (ftfy, html) and encoded whole in Rust. With
        `require_text`, a text with nothing left after cleaning raises ValueError."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):  # ("a str or a list of str,
            # got str" refused one text by the rule it stated: __call__ wraps one str, encode_batch does not)
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}"
                            + ("; for one text use encode(text)" if isinstance(texts, str) else ""))
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        plain = [] if self._words is None else [
            i for i, t in enumerate(texts) if _PLAIN_TEXT.fullmatch(t) and "<|" not in t]
        if len(plain) == len(texts):  # the common case: nothing to merge
            ids, lengths = self._encode_plain(list(texts))
            empty = np.flatnonzero(lengths == 0)
        else:
            plain_set = set(plain)
            other = [i for i in range(len(texts)) if i not in plain_set]
            cleaned = [clean_text(texts[i], for_ids=True) for i in other]
            flat_other, other_len = _flatten(self._encode_rust(cleaned))
            flat_plain, plain_len = self._encode_plain([texts[i] for i in plain])
            lengths = np.zeros(len(texts), dtype=np.int64)
            lengths[plain], lengths[other] = plain_len, other_len
            ids = np.empty(int(lengths.sum()), dtype=np.int64)
            starts = np.cumsum(lengths) - lengths
            for rows, flat, n in ((plain, flat_plain, plain_len), (other, flat_other, other_len)):
                ids[_ragged_positions(starts[rows], n)] = flat
            empty = sorted([plain[i] for i in np.flatnonzero(plain_len == 0)]
                           + [other[k] for k, c in enumerate(cleaned) if not c])
        if require_text and len(empty):
            i = int(empty[0])
            raise ValueError(f"empty text at index {i}: {_snippet(texts[i])} has nothing left after cleaning")
        return ids, lengths

    def _encode_plain(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of plain texts (see `_PLAIN_TEXT`) as in `_encode_texts`. BPE works on each piece of the
        pre-tokenizer's split on its own, and no piece crosses whitespace, so a text's ids are the ids of
        its whitespace-separated chunks in order. The batch is joined with a separator chunk, lower-cased
        and split in one C call each; every distinct chunk is split and BPE-encoded once, then comes from
        the cache, and the ids are gathered in numpy. Captions reuse a small vocabulary of words."""
        if not texts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        words = self._words  # this call's cache throughout, even if another thread clears (replaces) it
        if words.full():
            words = self._words = _ChunkIds()
        chunks = f" {_ChunkIds.SEPARATOR} ".join(texts).lower().split()
        rows = words.rows(chunks)
        if rows is None:  # new words: encode each distinct one once (unlocked: other threads carry on)
            new = words.missing(chunks)
            pieces = [_ASCII_SPLIT.findall(c) for c in new]
            distinct = list({p for ps in pieces for p in ps})
            piece_ids = dict(zip(distinct, self._encode_rust(distinct)))
            words.add(new, [list(itertools.chain.from_iterable(map(piece_ids.__getitem__, ps))) for ps in pieces])
            rows = words.rows(chunks)
        ids, chunk_len = words.gather(rows)
        text_of_chunk = np.cumsum(rows == 0)  # a separator starts the next text
        return ids, np.bincount(text_of_chunk, weights=chunk_len, minlength=len(texts)).astype(np.int64)

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, on_overflow: str = "truncate"
    ) -> torch.LongTensor:
        """`[N, context_length]` ids: `[SOT, ids..., EOT]` padded with 0 (N=1 for a single str).

        on_overflow="truncate" cuts a long text so EOT stays the last token; "error" raises ValueError.
        """
        ctx = self.context_length if context_length is None else checked_context_length(context_length, MIN_CONTEXT_LENGTH, _ROOM)
        texts = checked_texts(texts, on_overflow)
        ids, lengths = self._encode_texts(texts, require_text=True)
        too_long = np.flatnonzero(lengths > ctx - 2)
        if on_overflow == "error" and len(too_long):
            i = int(too_long[0])
            raise ValueError(f"text at index {i} is {lengths[i] + 2} tokens long (with start/end), over the "
                             f"context length {ctx}: {_snippet(texts[i])}")
        n = len(lengths)
        kept = np.minimum(lengths, ctx - 2)
        out = np.zeros((n, ctx), dtype=np.int64)
        out[:, 0] = self.sot_token_id
        text_start = np.cumsum(lengths) - lengths  # where each text's ids start in `ids`
        source = _ragged_positions(text_start, kept)  # the first `kept` ids of each text
        out[np.repeat(np.arange(n), kept), 1 + source - np.repeat(text_start, kept)] = ids[source]
        out[np.arange(n), kept + 1] = self.eot_token_id
        return torch.from_numpy(out)

    # -- decoding -------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text of one id sequence. With skip_special_tokens, everything from the first EOT on (the padding)
        and SOT are dropped. Words are separated by spaces, punctuation included ("dog ." for "dog.")."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:  # the Rust decoder overflows on a negative id and drops an unknown one without a word
            raise ValueError(f"ids outside the vocabulary 0..{self.vocab_size - 1}: {bad[:5]}")
        if skip_special_tokens:
            if self.eot_token_id in ids:
                ids = ids[: ids.index(self.eot_token_id)]
            ids = [i for i in ids if i != self.sot_token_id]
        return self.tokenizer.decode(ids, skip_special_tokens=False).replace(_SUFFIX, " ").strip()

    # -- config ---------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, context_length={self.context_length})"


class ClipTokenizer(BpeTokenizer):
    """OpenAI CLIP's BPE tokenizer (49,408 tokens; SOT 49406, EOT 49407)."""

    def __init__(self, context_length: int = 77):
        super().__init__(_openai_tokenizer(), context_length)

    def to_config(self) -> dict[str, Any]:
        return {"type": "clip_bpe", "context_length": self.context_length}


class TrainedBpeTokenizer(BpeTokenizer):
    """A CLIP-style BPE tokenizer with merges learned by `train_bpe_tokenizer`; EOT has the highest id."""

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable config that holds the complete tokenizer (its `tokenizers` JSON as a string)."""
        return {
            "type": "trained_bpe",
            "context_length": self.context_length,
            "vocab_size": self.vocab_size,
            "tokenizer_json": self.tokenizer.to_str(),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the `tokenizers` JSON (also loadable by `tokenizers.Tokenizer.from_file`). It holds no normaliser:
        kizuna cleans text in Python first (:func:`clean_text`: ftfy, HTML entities, whitespace, lower case), so
        another user of the file gets the ids training saw only for text passed through ``clean_text``
        ("A Photo" otherwise splits as other tokens)."""
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike, context_length: int = 77) -> TrainedBpeTokenizer:
        # read as load_tokenizer reads it: a file written by a newer `tokenizers` opens with an older one too
        text = Path(path).read_text(encoding="utf-8")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "type" in obj and "model" not in obj:  # (its advice named such a file)
            raise ValueError(f"tokenizer file {str(path)!r} is a kizuna tokenizer config, not a `tokenizers` JSON: "
                             "load it with kizuna.data.tokenizer.load_tokenizer(path)")
        return cls(_tokenizers_json(text, f"tokenizer file {str(path)!r}", config_too=False), context_length)


MIN_BPE_VOCAB = 2 * 256 + 2  # the smallest BPE train_bpe_tokenizer learns: 512 byte symbols, SOT and EOT


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, context_length: int = 77, min_frequency: int = 2
) -> TrainedBpeTokenizer:
    """Learn CLIP-style BPE merges from `texts` (cleaned and split exactly as for OpenAI's tokenizer).

    The vocabulary is laid out like CLIP's: all 256 byte symbols and their `</w>` forms (so no text is
    ever out of vocabulary), then one token per merge, then SOT and EOT. `vocab_size` is an upper bound:
    a small corpus may yield fewer merges.
    """
    if isinstance(texts, (str, bytes)):  # iterated, a file's text was a corpus of one-character texts: no merges
        raise TypeError(f"texts must be an iterable of texts, got one {type(texts).__name__} ("
                        f"{len(texts)} characters); split a file's text into lines with .splitlines()")
    n_merges = vocab_size - MIN_BPE_VOCAB
    if n_merges < 0:
        raise ValueError(f"vocab_size must be >= {MIN_BPE_VOCAB} (512 byte symbols + 2 special tokens), got "
                         f"{vocab_size}")
    probe = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=_SUFFIX))
    probe.pre_tokenizer = _pre_tokenizer()
    # The trainer's own alphabet has at most 512 symbols, so this yields at least n_merges merges. The 256
    # `</w>` forms are given up front, in a fixed order: the trainer otherwise creates them in hash-map order,
    # which breaks ties between equally frequent pairs, so two trainings on one corpus gave different merges
    # (huggingface/tokenizers#1794) - and two DDP ranks different token ids.
    trainer = BpeTrainer(
        vocab_size=n_merges + 2 * 256,
        min_frequency=min_frequency,
        special_tokens=sorted(symbol + _SUFFIX for symbol in pre_tokenizers.ByteLevel.alphabet()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=_SUFFIX,
        show_progress=False,
    )
    kept = 0

    def cleaned():
        nonlocal kept
        for c in map(clean_text, texts):
            if c:
                kept += 1
                yield c

    probe.train_from_iterator(cleaned(), trainer=trainer)
    if not kept:  # it gave a tokenizer of byte symbols only, as if it had learned something
        raise ValueError("train_bpe_tokenizer: no texts to learn merges from (texts was empty, or every text was "
                         "blank after cleaning); pass the training captions")
    raw = json.loads(probe.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in raw][:n_merges]
    return TrainedBpeTokenizer(_build_tokenizer(_clip_layout_vocab(merges), merges), context_length)


def _installed_tokenizers_version() -> tuple[int, int]:
    import tokenizers

    m = _stdre.match(r"(\d+)\.(\d+)", getattr(tokenizers, "__version__", ""))
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _merges_as_strings(text: str) -> str:
    """`text` with its BPE merges written as "a b" strings, for `tokenizers` < 0.20, which reads no other form:
    0.20 and later write [a, b] pairs (and read both), so a tokenizer trained with a newer version, the JSON in
    every trained-BPE checkpoint, did not open with an older one. A pair whose tokens hold no space is the same
    merge as its string (a byte-level token never holds one); anything else is left for the parser to refuse."""
    try:
        obj = json.loads(text)
        merges = obj["model"]["merges"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return text
    if not isinstance(merges, list) or all(isinstance(m, str) for m in merges):
        return text
    if not all(isinstance(m, str) or (isinstance(m, list) and len(m) == 2
                                      and all(isinstance(t, str) and " " not in t for t in m)) for m in merges):
        return text
    obj["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return json.dumps(obj, ensure_ascii=False)


@functools.lru_cache(maxsize=8)
def _parsed_tokenizer(text: str) -> Tokenizer:
    """One `Tokenizer` per JSON text, shared (kizuna never changes one after it is built): a new one per
    get_tokenizer call kept ~1 MB in the library's own word cache that is never given back when the tokenizer
    is dropped (a notebook or service calling kizuna again and again grew without bound)."""
    return Tokenizer.from_str(_merges_as_strings(text) if _installed_tokenizers_version() < (0, 20) else text)


def _tokenizers_json(text: str, where: str, config_too: bool = True) -> Tokenizer:
    """`Tokenizer.from_str`, whose bare Exception ("Model missing. at line 1 column 2") names no file.
    ``config_too``: where a kizuna tokenizer config is read as well (load_tokenizer), the advice names one."""
    old = _installed_tokenizers_version() < (0, 20)
    try:
        return _parsed_tokenizer(text)
    except Exception as e:  # noqa: BLE001 - the Rust parser raises a plain Exception
        import tokenizers

        newer = (f"; it may need a newer `tokenizers` than the installed {tokenizers.__version__}: "
                 "pip install -U 'tokenizers>=0.20'") if old else ""
        raise ValueError(f"{where} is not a `tokenizers` JSON ({str(e).strip()[:200]}){newer}; use one written by "
                         "TrainedBpeTokenizer.save"
                         + (" (or a kizuna tokenizer config, a dict with 'type')" if config_too else "")) from None


def load_tokenizer(path: str | os.PathLike, context_length: int | None = None) -> TextTokenizer:
    """Load a `tokenizers` JSON file (as written by `save`) or a JSON file holding a kizuna tokenizer config."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        obj = json.loads(text)
    except FileNotFoundError:
        raise ValueError(f"tokenizer file {str(path)!r} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"tokenizer file {str(path)!r} is not JSON ({e})") from None
    if isinstance(obj, dict) and "type" in obj and "model" not in obj:
        return tokenizer_from_config(obj if context_length is None else {**obj, "context_length": context_length})
    if isinstance(obj, dict) and "model" not in obj:  # the Rust parser's message would be about JSON syntax
        raise ValueError(f"tokenizer file {str(path)!r} is neither a kizuna tokenizer config (it has no 'type') nor a "
                         "`tokenizers` JSON (no 'model')")
    tokenizer = _tokenizers_json(text, f"tokenizer file {str(path)!r}")
    return TrainedBpeTokenizer(tokenizer, 77 if context_length is None else context_length)


def tokenizer_from_config(cfg: dict[str, Any]) -> TextTokenizer:
    """Rebuild a tokenizer from `to_config()` output."""
    kind = cfg.get("type")
    if kind == "sentencepiece":  # SigLIP's (kizuna.data.siglip_tokenizer), with its own default length
        from .siglip_tokenizer import SiglipTokenizer

        return SiglipTokenizer.from_config(cfg)
    if kind == "unavailable":
        raise ValueError(f"this checkpoint's tokenizer is not bundled with kizuna: {cfg.get('note', '')}")
    if kind not in ("clip_bpe", "openai", "trained_bpe", "minilm"):
        what = "tokenizer config lacks 'type'" if kind is None else f"unknown tokenizer type {kind!r}"
        raise ValueError(f"{what}; expected 'clip_bpe', 'openai', 'trained_bpe', 'minilm' or 'sentencepiece'")
    ctx = checked_context_length(cfg.get("context_length", 77), MIN_CONTEXT_LENGTH, _ROOM, "the tokenizer config's context_length")
    if kind == "minilm":
        from kizuna.models.minilm import MiniLMTokenizer

        return MiniLMTokenizer(ctx)
    if kind == "trained_bpe":
        if "tokenizer_json" not in cfg:
            raise ValueError("trained_bpe tokenizer config lacks 'tokenizer_json'")
        return TrainedBpeTokenizer(_tokenizers_json(cfg["tokenizer_json"], "the config's 'tokenizer_json'",
                                                    config_too=False), ctx)
    return ClipTokenizer(ctx)


def get_tokenizer(
    name_or_cfg: str | os.PathLike | dict[str, Any] = "clip_bpe", context_length: int | None = None
) -> TextTokenizer:
    """"clip_bpe"/"openai", a config dict, or a path to a tokenizer JSON. `context_length` (if given)
    overrides the config's; the default is 77."""
    if isinstance(name_or_cfg, dict):
        cfg = name_or_cfg if context_length is None else {**name_or_cfg, "context_length": context_length}
        return tokenizer_from_config(cfg)
    if isinstance(name_or_cfg, str) and name_or_cfg in ("clip_bpe", "openai"):
        return ClipTokenizer(77 if context_length is None else context_length)
    if isinstance(name_or_cfg, (str, os.PathLike)):
        path = Path(name_or_cfg)
        if path.is_file():
            return load_tokenizer(name_or_cfg, context_length)
        # a path, not a name: say what is wrong with it rather than "unknown tokenizer"
        if path.is_dir():
            raise ValueError(f"tokenizer {str(path)!r} is a folder; give the path of a tokenizer JSON file in it")
        if isinstance(name_or_cfg, os.PathLike) or path.suffix == ".json" or len(path.parts) > 1:
            raise ValueError(f"tokenizer file {str(path)!r} does not exist; check the path (or give 'clip_bpe')")
    # an object's repr (a whole model's) can run to thousands of characters: name its type
    what = repr(name_or_cfg) if isinstance(name_or_cfg, (str, os.PathLike)) else f"<{type(name_or_cfg).__name__}>"
    raise ValueError(
        f"unknown tokenizer {what}: expected 'clip_bpe', 'openai', a config dict or a path to a tokenizer JSON"
    )
