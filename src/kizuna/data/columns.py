"""Text columns packed into one buffer: a sample index's keys, paths and captions, millions of them.

A ``list`` of ``str`` is a Python object per string (about 50 bytes of header besides the text), and reading one
from a forked DataLoader worker writes its reference count: the page is copied into that worker, and over an
epoch every worker holds its own copy of the columns it read (pytorch/pytorch#13246). Packed, a column is one
``bytes`` of UTF-8 and an array of where each string ends: the workers share it page for page with the process
that built it, and it pickles (to spawned workers) as two buffers.

Both columns read as sequences: ``col[i]``, ``col[a:b]`` (a list), ``len``, iteration, ``==`` against a list."""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

_CODEC = ("utf-8", "surrogatepass")  # every str round-trips: file names' escaped bytes, JSON's lone surrogates


class PackedStrings(Sequence):
    """``str`` or ``None`` per row (``None``: a tar member's missing path), packed."""

    def __init__(self, strings: Iterable[str | None] = ()):
        if isinstance(strings, PackedStrings):  # immutable: shared, not copied
            self._data, self._ends, self._none = strings._data, strings._ends, strings._none
            return
        encoded, none = [], []
        for k, text in enumerate(strings):
            if text is None:
                none.append(k)
                encoded.append(b"")
            else:
                encoded.append(text.encode(*_CODEC))
        self._data = b"".join(encoded)
        self._ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        self._none = None
        if none:
            self._none = np.zeros(len(encoded), dtype=bool)
            self._none[none] = True

    def __len__(self) -> int:
        return len(self._ends)

    def _row(self, k: int) -> str | None:
        if self._none is not None and self._none[k]:
            return None
        return self._data[int(self._ends[k - 1]) if k else 0:int(self._ends[k])].decode(*_CODEC)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(len(self)))]
        k = operator.index(i)
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"row {i} of a column of {n}")
        return self._row(k)

    def __iter__(self) -> Iterator[str | None]:
        data, none, start = self._data, self._none, 0
        for k, end in enumerate(self._ends.tolist()):
            yield None if none is not None and none[k] else data[start:end].decode(*_CODEC)
            start = end

    def __eq__(self, other):
        if isinstance(other, (PackedStrings, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # a sequence compared by value, as a list

    def joined(self, start: int, stop: int, sep: bytes = b"\0") -> bytes:
        """Rows ``start:stop`` encoded (UTF-8, surrogates passed) and joined by the one byte ``sep``, as
        ``sep.join(s.encode("utf-8", "surrogatepass") for s in col[start:stop])`` (a None row as ""), read off the
        buffer: no string is made (a fingerprint of millions of keys hashes them a block at a time)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        if stop <= start:
            return b""
        first = int(self._ends[start - 1]) if start else 0
        ends = self._ends[start:stop] - first
        body = np.frombuffer(self._data, dtype=np.uint8, count=int(ends[-1]), offset=first)
        return np.insert(body, ends[:-1], np.frombuffer(sep, dtype=np.uint8)[0]).tobytes()

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self[:3]))
        return f"{type(self).__name__}([{head}{', ...' if len(self) > 3 else ''}], {len(self)} rows)"


class PackedCaptions(Sequence):
    """A tuple of captions per row (``()`` when none), packed: every caption in one :class:`PackedStrings`, and
    where each row's captions start."""

    def __init__(self, rows: Iterable[Sequence[str]] = ()):
        if isinstance(rows, PackedCaptions):
            self._texts, self._starts = rows._texts, rows._starts
            return
        counts: list[int] = []

        def flat():
            for captions in rows:
                counts.append(len(captions))
                yield from captions

        self._texts = PackedStrings(flat())
        self._starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))]).astype(np.int64)

    def __len__(self) -> int:
        return len(self._starts) - 1

    def counts(self) -> np.ndarray:
        """How many captions each row has."""
        return np.diff(self._starts)

    def _row(self, k: int) -> tuple[str, ...]:
        return tuple(self._texts._row(j) for j in range(int(self._starts[k]), int(self._starts[k + 1])))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._row(k) for k in range(*i.indices(len(self)))]
        k = operator.index(i)
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"row {i} of a column of {n}")
        return self._row(k)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        texts = iter(self._texts)
        for count in self.counts().tolist():
            yield tuple(next(texts) for _ in range(count))

    def __eq__(self, other):
        if isinstance(other, (PackedCaptions, list, tuple)):
            return len(self) == len(other) and all(tuple(a) == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self[:2]))
        return f"{type(self).__name__}([{head}{', ...' if len(self) > 2 else ''}], {len(self)} rows)"
