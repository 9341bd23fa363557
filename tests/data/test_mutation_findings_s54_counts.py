"""Session 54 mutation findings: the BPE word cache's size counted by its chunks' characters (data/tokenizer.py
_ChunkIds.chars), and nshards.txt read as bytes it may not decode (data/sources.py _shards_in_dir)."""
import pytest

import kizuna.data.tokenizer as ktok
from kizuna.data.sources import resolve_spec
from kizuna.data.tokenizer import ClipTokenizer


def test_the_word_cache_counts_its_chunks_characters():
    """Kills: _ChunkIds.add no longer counting the chunks' characters (a cache of 10^5-character chunks with few
    ids each was measured by its ids alone)."""
    tok = ClipTokenizer(77)
    tok.encode_batch(["hello world, a photo"])
    words = tok._words
    assert words.chars == len("hello") + len("world,") + len("a") + len("photo") == 17
    tok.encode_batch(["hello again"])  # (a chunk held already is not counted twice)
    assert tok._words.chars == 17 + len("again")


def test_a_cache_full_by_characters_alone_is_cleared(monkeypatch):
    """Kills: full() reading the ids alone (or the chunk count alone)."""
    tok = ClipTokenizer(77)
    tok.encode_batch(["x" * 50])
    words = tok._words
    monkeypatch.setattr(ktok, "_WORD_CACHE_BYTES", words.chars + 8 * words.n_ids - 1)
    assert words.full()
    tok.encode_batch(["y"])
    assert tok._words is not words and "x" * 50 not in tok._words.index


def test_an_nshards_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    """Kills: nshards.txt opened without errors="replace" (its odd bytes failed as "'utf-8' codec can't decode
    byte", the file unnamed)."""
    (tmp_path / "0.tar").write_bytes(b"")
    (tmp_path / "nshards.txt").write_bytes(b"\xff\xfe1")
    with pytest.raises(ValueError, match=r"nshards.txt: expected the number of shards"):
        resolve_spec(str(tmp_path))


def test_a_cache_full_by_its_chunk_count_is_cleared(monkeypatch):
    """Kills: full() reading the bytes alone (the count limit, _WORD_CACHE_LIMIT, no longer cleared it)."""
    tok = ClipTokenizer(77)
    monkeypatch.setattr(ktok, "_WORD_CACHE_LIMIT", 2)
    tok.encode_batch(["one two three"])
    words = tok._words
    assert len(words) == 3 and words.full()
    tok.encode_batch(["four"])
    assert tok._words is not words


def test_a_long_nshards_text_is_quoted_shortened(tmp_path):
    """Kills: the refusal quoting the whole text read (64 characters of digits) rather than its first 40."""
    (tmp_path / "0.tar").write_bytes(b"")
    (tmp_path / "nshards.txt").write_text("7" * 5000)
    with pytest.raises(ValueError) as refused:
        resolve_spec(str(tmp_path))
    assert repr("7" * 40) in str(refused.value) and "7" * 41 not in str(refused.value)


def test_a_huge_nshards_file_is_not_read_whole(tmp_path):
    """Kills: nshards.txt read whole (f.read(), not its first 64 characters): a file of GBs, sparse here, filled the
    memory to say it is no count. Run in a child with its memory capped."""
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "0.tar").write_bytes(b"")
    with open(tmp_path / "nshards.txt", "wb") as f:
        f.truncate(4 << 30)  # (sparse: no disk used)
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from kizuna.data.sources import resolve_spec
        try:
            resolve_spec({str(tmp_path)!r})
        except ValueError as e:
            print("refused" if "expected the number of shards" in str(e) else e)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.strip() == "refused", done.stderr[-800:]
