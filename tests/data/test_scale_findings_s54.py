"""The BPE word cache is bounded by what it holds as well as by its count of chunks (stop 54's scale hunt): long
junk chunks (a web caption's base64) of 10^4 characters each filled GBs in every loader worker before the count
of 200,000 was reached."""
import random

from kizuna.data import tokenizer as ktok
from kizuna.data.tokenizer import ClipTokenizer, clean_text


def test_long_chunks_clear_the_word_cache_by_size(monkeypatch):
    rng = random.Random(0)
    junk = ["a photo of a dog data:image/png;base64," + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=2000))
            for _ in range(40)]
    tok = ClipTokenizer(77)
    expected = tok._encode_rust([clean_text(t) for t in junk])
    monkeypatch.setattr(ktok, "_WORD_CACHE_BYTES", 20_000)  # (some ten of these chunks)
    most = 0
    for i in range(0, len(junk), 4):
        assert tok.encode_batch(junk[i:i + 4]) == expected[i:i + 4]
        most = max(most, tok._words.chars + 8 * tok._words.n_ids)
    assert most < 20_000 + 4 * 12_000  # (it held all 40: some 400,000)
    assert tok.encode_batch(junk) == expected


def test_many_damaged_shards_are_said_a_few_then_in_one_line(tmp_path):
    import sys
    import warnings
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import make_pair_shard

    from kizuna.data import tar_index
    from kizuna.data.sources import build_index

    for i in range(8):
        make_pair_shard(tmp_path / f"{i:06d}.tar", i * 10, 3)
        data = (tmp_path / f"{i:06d}.tar").read_bytes()
        (tmp_path / f"{i:06d}.tar").write_bytes(data[: len(data) // 2])  # cut mid-member
    tar_index.clear_cache()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        idx = build_index(str(tmp_path))
    lines = [str(w.message) for w in said]
    assert sum("is truncated or corrupt" in line for line in lines) == 3, lines
    (more,) = [line for line in lines if line.startswith("... and")]
    assert "5 more tar shards, as the 3 above: truncated or corrupt (" in more
    assert idx.skips.counts.get("truncated", 0) >= 8  # (the counts are all there)
    tar_index.clear_cache()
    with warnings.catch_warnings(record=True) as said:  # one shard indexed alone: said as before
        warnings.simplefilter("always")
        tar_index.index_tar(tmp_path / "000000.tar")
    assert len(said) == 1 and "is truncated or corrupt" in str(said[0].message)


def test_a_brace_range_a_digit_too_long_is_refused_before_its_names_are_made(tmp_path):
    import re
    import time

    import pytest

    from kizuna.data.sources import build_index, expand_braces

    start = time.perf_counter()
    spec = f"{tmp_path}/{{0000000..9999999}}.tar"
    with pytest.raises(ValueError, match=re.escape(spec) + " expands to more than 4,000,000 names"):
        build_index(spec)  # (named as typed: the recursion named its own piece, without the folders before it)
    with pytest.raises(ValueError, match="expands to more than"):
        expand_braces("{0..999}/{0..9999}.tar")  # (nested: each range alone is small)
    assert time.perf_counter() - start < 20
    assert len(expand_braces("{000000..099999}.tar")) == 100_000


def test_a_dataset_keeps_as_many_shards_open_as_the_limit_allows(tmp_path, monkeypatch):
    """64 at most, whatever `ulimit -n` allowed: a shuffled epoch over many shards reopened one for most samples."""
    import resource
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _shards import make_pair_shard

    from kizuna.data.sources import PairDataset

    for i in range(80):
        make_pair_shard(tmp_path / f"{i:06d}.tar", i, 1)
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (4096, 4096))  # a budget of 512
    ds = PairDataset(str(tmp_path))
    for i in range(80):
        assert ds[i]["caption"]
    assert len(ds._fds) == 80  # (64)
