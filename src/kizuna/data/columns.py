"""Text columns packed into one buffer: a sample index's keys, paths and captions, millions of them.

A ``list`` of ``str`` is a Python object per string (about 50 bytes of header besides the text), and reading one
from a forked DataLoader worker writes its reference count: the page is copied into that worker, and over an
epoch every worker holds its own copy of the columns it read (pytorch/pytorch#13246). Packed, a column is one
``bytes`` of UTF-8 and an array of where each string ends: the workers share it page for page with the process
that built it, and it pickles (to spawned workers) as two buffers.

Both columns read as sequences: ``col[i]``, ``col[a:b]`` (a list), ``len``, iteration, ``==`` against a list.
A column of ASCII text (keys, most captions) is sliced and iterated by decoding its span once; other text one
string at a time."""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import numpy as np

_CODEC = ("utf-8", "surrogatepass")  # every str round-trips: file names' escaped bytes, JSON's lone surrogates


class _Rows(Sequence):
    """Indexing the two columns share: an int is a row (negative from the end), a slice a list of rows (one span
    decoded at a time where its step is 1). ``_row(k)`` and ``_span(start, stop)`` are the column's own."""

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return self._span(start, stop)
            return [self._row(k) for k in range(start, stop, step)]
        k = operator.index(i)
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"row {i} of a column of {n}")
        return self._row(k)



def _row_numbers(rows, length: int) -> np.ndarray:
    """``rows`` as int64, counted from the end where negative, as a list indexes (take([-1]) glued every row
    into one string: the start of row 0 with the end of the last)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (int(rows.min()) < -length or int(rows.max()) >= length):
        raise IndexError(f"row numbers {int(rows.min())}..{int(rows.max())} outside a column of {length} rows")
    return np.where(rows < 0, rows + length, rows)

class PackedStrings(_Rows):
    """``str`` or ``None`` per row (``None``: a tar member's missing path), packed."""

    def __init__(self, strings: Iterable[str | None] = ()):
        if isinstance(strings, PackedStrings):  # immutable: shared, not copied
            self.__setstate__(strings.__getstate__())
            return
        rows = strings if isinstance(strings, list) else list(strings)
        none = None
        if None in rows:  # (a scan in C; paths of tar members are all None)
            none = np.fromiter((s is None for s in rows), dtype=bool, count=len(rows))
            rows = ["" if s is None else s for s in rows]
        # a join and an encode per block of rows, in C (a bytes object per string held the text twice over,
        # with headers: +1.2 GB building a million rows of five captions; all joined at once, +0.6 GB)
        data, lengths, ascii_only = bytearray(), np.empty(len(rows), dtype=np.int64), True
        for start in range(0, len(rows), self._BLOCK):
            block = rows[start:start + self._BLOCK]
            joined = "".join(block)
            if joined.isascii():
                data += joined.encode("ascii")
                lengths[start:start + len(block)] = np.fromiter(map(len, block), dtype=np.int64, count=len(block))
            else:
                ascii_only = False
                data += joined.encode(*_CODEC)
                lengths[start:start + len(block)] = np.fromiter((len(s.encode(*_CODEC)) for s in block),
                                                                dtype=np.int64, count=len(block))
        self._data = bytes(data) if len(data) < self._BLOCK * 64 else data  # (a large one is not copied again)
        self._ends = np.cumsum(lengths)
        self._none = none if none is not None and none.any() else None
        self._ascii = ascii_only
        self._at = None

    # the offsets as a memoryview (a Python int per read, not a numpy scalar: 4x faster row access), made
    # again after unpickling
    def __getstate__(self):
        return {"data": self._data, "ends": self._ends, "none": self._none, "ascii": self._ascii}

    def __setstate__(self, state):
        self._data, self._ends, self._none, self._ascii = state["data"], state["ends"], state["none"], state["ascii"]
        self._at = None

    def _offsets(self) -> memoryview:
        if self._at is None:
            self._at = memoryview(np.ascontiguousarray(self._ends, dtype=np.int64)).cast("B").cast("q")
        return self._at

    def __len__(self) -> int:
        return len(self._ends)

    def _row(self, k: int) -> str | None:
        if self._none is not None and self._none[k]:
            return None
        at = self._offsets()
        return self._data[at[k - 1] if k else 0:at[k]].decode(*_CODEC)

    def _span(self, start: int, stop: int) -> list[str | None]:
        """Rows ``start:stop`` (0 <= start <= stop <= len)."""
        if stop <= start:
            return []
        at = self._offsets()
        first = at[start - 1] if start else 0
        if not self._ascii:
            data, rows, begin = self._data, [], first
            for end in at[start:stop]:
                rows.append(data[begin:end].decode(*_CODEC))
                begin = end
        else:  # one decode, then str slices (byte offsets are character offsets)
            text = self._data[first:at[stop - 1]].decode("ascii")
            ends = [end - first for end in at[start:stop]]
            rows = [text[a:b] for a, b in zip([0, *ends[:-1]], ends)]
        if self._none is not None:
            rows = [None if gone else row for row, gone in zip(rows, self._none[start:stop].tolist())]
        return rows

    _BLOCK = 1 << 16  # rows decoded at a time when iterating

    def __iter__(self) -> Iterator[str | None]:
        for start in range(0, len(self), self._BLOCK):
            yield from self._span(start, min(start + self._BLOCK, len(self)))

    def __eq__(self, other):
        if isinstance(other, (PackedStrings, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # a sequence compared by value, as a list

    def take(self, rows) -> "PackedStrings":
        """The column of ``rows`` (in that order), copied buffer to buffer a block at a time: no string is made
        (a list of them rebuilt a subset of a million rows in 3 s)."""
        rows = _row_numbers(rows, len(self))
        ends = self._ends
        starts = ends[rows - 1] if len(rows) else ends[:0]
        starts = np.where(rows > 0, starts, 0)
        stops = ends[rows]
        data, mv = bytearray(), memoryview(self._data)
        for lo in range(0, len(rows), self._BLOCK):
            data += b"".join(mv[a:b] for a, b in zip(starts[lo:lo + self._BLOCK].tolist(),
                                                     stops[lo:lo + self._BLOCK].tolist()))
        out = PackedStrings.__new__(PackedStrings)
        out.__setstate__({"data": bytes(data) if len(data) < self._BLOCK * 64 else data,
                          "ends": np.cumsum(stops - starts), "none": None if self._none is None else self._none[rows],
                          "ascii": self._ascii})
        return out

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


class PackedCaptions(_Rows):
    """A tuple of captions per row (``()`` when none), packed: every caption in one :class:`PackedStrings`, and
    where each row's captions start."""

    def __init__(self, rows: Iterable[Sequence[str]] = ()):
        if isinstance(rows, PackedCaptions):
            self._texts, self._starts, self._at = rows._texts, rows._starts, None
            return
        rows = rows if isinstance(rows, list) else list(rows)
        counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        self._texts = PackedStrings([caption for captions in rows for caption in captions])
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._at = None

    def __getstate__(self):
        return {"texts": self._texts, "starts": self._starts}

    def __setstate__(self, state):
        self._texts, self._starts, self._at = state["texts"], state["starts"], None

    def __len__(self) -> int:
        return len(self._starts) - 1

    def counts(self) -> np.ndarray:
        """How many captions each row has."""
        return np.diff(self._starts)

    def _row(self, k: int) -> tuple[str, ...]:
        if self._at is None:
            self._at = memoryview(np.ascontiguousarray(self._starts, dtype=np.int64)).cast("B").cast("q")
        return tuple(self._texts._span(self._at[k], self._at[k + 1]))  # (ASCII captions: one decode for the row)

    def take(self, rows) -> "PackedCaptions":
        """The rows ``rows`` (in that order), as :meth:`PackedStrings.take`."""
        rows = _row_numbers(rows, len(self))
        first, counts = self._starts[rows], self._starts[rows + 1] - self._starts[rows]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # each row's caption numbers: its first, first + 1, ... (counts of them)
        captions = np.repeat(first - starts[:-1], counts) + np.arange(int(starts[-1]), dtype=np.int64)
        out = PackedCaptions.__new__(PackedCaptions)
        out.__setstate__({"texts": self._texts.take(captions), "starts": starts})
        return out

    def _span(self, start: int, stop: int) -> list[tuple[str, ...]]:
        return list(self._rows(start, stop)) if stop > start else []

    def _rows(self, start: int, stop: int) -> Iterator[tuple[str, ...]]:
        first, last = int(self._starts[start]), int(self._starts[stop])
        texts = iter(self._texts[first:last])
        for count in np.diff(self._starts[start:stop + 1]).tolist():
            yield tuple(islice(texts, count))

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        step = PackedStrings._BLOCK
        for start in range(0, len(self), step):
            yield from self._rows(start, min(start + step, len(self)))

    def __eq__(self, other):
        if isinstance(other, (PackedCaptions, list, tuple)):
            return len(self) == len(other) and all(tuple(a) == tuple(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(map(repr, self[:2]))
        return f"{type(self).__name__}([{head}{', ...' if len(self) > 2 else ''}], {len(self)} rows)"
