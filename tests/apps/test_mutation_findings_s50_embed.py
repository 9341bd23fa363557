"""Mutation findings (session 50), `kizuna embed`'s .txt of row names: every character Python's str.splitlines
breaks a line at is written as its escape, so each name is one line for any reader."""
from __future__ import annotations

import numpy as np

from kizuna.apps.embed import write_embeddings

BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_every_line_break_splitlines_knows_is_escaped(tmp_path):
    assert set(BREAKS) == {c for c in map(chr, range(0x3000)) if len(f"a{c}b".splitlines()) == 2}
    names = [f"a{c}b.png" for c in BREAKS]
    write_embeddings(tmp_path / "e.npy", names, np.eye(len(names), 3, dtype=np.float32), "path")
    rows = (tmp_path / "e.txt").read_text(encoding="utf-8").splitlines()
    assert rows == [f"a{c.encode('unicode_escape').decode('ascii')}b.png" for c in BREAKS]
    assert all(len(row) > len("ab.png") + 1 for row in rows)  # (an escape, not the character)
