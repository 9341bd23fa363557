r"""Seekable index of WebDataset tar shards.

A shard is scanned once with :mod:`tarfile` (headers only, plus the tiny ``.txt``/``.cls`` members);
afterwards every image is read with one positioned read (``os.pread(fd, size, offset_data)``), so a
map-style dataset can jump to any sample without re-scanning the archive.

Members are grouped into samples the way WebDataset does it: the key is the member path up to the
first dot of its basename (``dir/000012.jpg`` -> key ``dir/000012``, extension ``jpg``), and a
sample is a run of *adjacent* members with the same key. A key that comes back after other keys (a plain
``tar cf`` of a folder stores files in directory order) is counted (``scattered``) and warned about once,
with the command that repacks the shard in name order.

Public API
----------
``IMAGE_EXTS``
    image extensions recognised, in order of preference when a sample has several.
``split_key(name) -> (key, ext)``
    WebDataset key/extension split (extension lower-cased).
``parse_captions(text) -> tuple[str, ...]``
    ``.txt`` payload -> captions: one per line (CLIP_benchmark retrieval layout), lines ending at ``\n``,
    ``\r\n`` or ``\r`` only, each stripped, blank lines dropped.
``parse_label(text) -> int``
    ``.cls`` payload (or CSV label) -> class index, ``"3.0"`` read as 3; ``-2`` when it is not a whole
    number >= 0.
``TarShardIndex``
    per-shard result (columnar lists, one entry per sample that has a readable image):
    ``keys``, ``offsets``/``sizes`` of the image member, ``image_exts``,
    ``captions`` (``None``: no ``.txt`` member; ``()``: ``.txt`` present but blank),
    ``labels`` (``-1``: no ``.cls``; ``-2``: unparsable ``.cls``),
    ``skipped`` (reason -> count for groups dropped at this level: ``missing_image``,
    ``empty_image``, ``truncated``, ``sparse_member`` (a GNU sparse file, whose bytes are not stored in
    one piece), ``duplicate_member`` (a member name repeated within one sample: either copy could be paired
    with the captions), ``dotted_key``: an image member whose key has a dot,
    ``photo.000.jpg``, as WebDataset keys end at the first dot) with ``skip_keys`` (reason -> first
    few keys),
    ``truncated`` / ``detail`` (why the scan stopped early, or what follows the end-of-archive marker
    that should not: data, or more zeros than tar's padding), ``num_members``. A hard or symbolic link
    member reads as the regular member it names, where the shard stored that one before it (a link to
    anything else has no bytes in the shard).
``index_tar(path, cache_dir=None) -> TarShardIndex``
    scan (or fetch from the in-memory / optional on-disk JSON cache, keyed by real path, mtime and
    size). A truncated or corrupt shard is indexed up to the damage and warned about once per
    process, naming the shard.
``read_range(fd, offset, size) -> bytes``
    positioned read that never moves a shared file offset (safe after ``fork``).
``clear_cache()``
    drop the in-memory cache (tests; long-lived processes that rewrite shards in place).

Caption/label *requirements* are not applied here (the cache must not depend on them): the caller
(:func:`kizuna.data.sources.build_index`) decides what an empty or missing caption means.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kizuna.data.images import IMAGE_EXTENSIONS

__all__ = [
    "IMAGE_EXTS",
    "TarShardIndex",
    "clear_cache",
    "index_tar",
    "decode_text",
    "decoded_text",
    "parse_captions",
    "parse_label",
    "read_range",
    "split_key",
]

IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
# the other image types of image folders, which a shard sample's image may be and is not read for
_OTHER_IMAGE_TYPES = tuple(e for e in IMAGE_EXTENSIONS if e[1:] not in IMAGE_EXTS)
_CAPTION_EXT = "txt"
_LABEL_EXT = "cls"
_BLOCK = 512
# the end-of-archive marker (two zero blocks) and the padding to a whole record: 20 blocks by default, up to
# 1 MiB with tar's largest blocking factors (`tar -b 64` pads to 32 KiB and is a valid archive)
_MAX_END_PADDING = 2 * _BLOCK + (1 << 20)
# Bump when the cached JSON layout or the scan semantics change, so stale caches are ignored.
_CACHE_VERSION = 14  # 2: captions that are not UTF-8 read as Windows-1252 (1 replaced their bytes); 3: inode, ctime;
# 4: data or overlong zeros after the end-of-archive marker make the shard damaged; 5: padding up to 1 MiB is
# clean, and a sample's own dotted images (0001.mask.png) are no skip; 6: captions split at line ends only, a
# .cls decoded as a side-car's is (a byte-order mark); 7: samples whose members are not adjacent are counted;
# 8: GNU sparse members are skipped (sparse_member); 9: a .cls of 2^31 or more is a bad label (-2); 10: hard and
# symbolic links to a member stored earlier are read as that member; 11: macOS tar's ._ AppleDouble members are
# left out; 12: a sample whose only image is of a type shards are not read for (.gif) is unsupported_image, not
# missing_image; 13: members with no extension, top-level __name__ files and .DS_Store are no sample's files;
# 14: a caption file that is not UTF-8 keeps its valid UTF-8 (only its invalid bytes read as Windows-1252), counted
_MAX_KEY_EXAMPLES = 3

# (real path, mtime, size, inode, ctime): a shard replaced by one of the same size and mtime (cp -p,
# rsync -a; tars are padded to 10 KB records, so equal sizes are common) was served the old offsets and
# captions; the new file is another inode, and ctime cannot be set back from user space
Fingerprint = tuple
# one entry per shard (its real path), with the fingerprint it was scanned at: keyed by the fingerprint, every
# version of a shard rewritten in place stayed in a long-lived process's memory (2 MB each for a Flickr8k shard)
_memory_cache: dict[str, tuple[Fingerprint, "TarShardIndex"]] = {}
_memory_samples = 0  # the samples it holds
# The samples the memory cache keeps, at most (170 bytes each for a labelled set, 780 with Flickr8k's five captions:
# up to ~0.8 GB held for a captioned set that large): the shards indexed first. Unbounded, a
# notebook that had trained on a CC3M-sized set kept ~0.9 GB of indexes after its trainer was gone; a shard not
# kept here is read from the disk cache (KIZUNA_INDEX_CACHE), or scanned again.
MEMORY_CACHE_SAMPLES = 1_000_000
_warned: set[Fingerprint] = set()
_lock = threading.Lock()


@dataclass
class TarShardIndex:
    path: str
    keys: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    image_exts: list[str] = field(default_factory=list)
    captions: list[tuple[str, ...] | None] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    skip_keys: dict[str, list[str]] = field(default_factory=dict)
    truncated: bool = False
    detail: str = ""
    num_members: int = 0
    scattered: int = 0  # runs of members whose key an earlier run had (not adjacent: not paired), and one such key
    scattered_key: str = ""
    not_utf8: int = 0  # caption files that are not UTF-8 (read by decode_text's fallback), and one such key
    not_utf8_key: str = ""

    def __len__(self) -> int:
        return len(self.keys)

    def _skip(self, reason: str, key: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.skip_keys.setdefault(reason, [])
        if len(examples) < _MAX_KEY_EXAMPLES:
            examples.append(key)


def _not_a_sample_file(name: str) -> bool:
    """Members WebDataset does not read as a sample's file: a name with no extension (README), a top-level
    ``__name__`` (its metadata files, ``__index__``), macOS's ``.DS_Store``."""
    base = posixpath.basename(name.rstrip("/"))
    return ("." not in base or base == ".DS_Store"
            or ("/" not in name.strip("/") and base.startswith("__") and base.endswith("__")))


def split_key(name: str) -> tuple[str, str]:
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


def decode_text(data: bytes) -> str:
    """A caption file's bytes as text: UTF-8 (a byte-order mark dropped), its bytes that are not UTF-8 read as
    Windows-1252, the legacy encoding such files are most often in (it reads Latin-1's letters too). Decoding
    invalid UTF-8 with replacement turned every accented letter into U+FFFD ("caf\ufffd" for "café"); decoding the
    whole file as Windows-1252 when one byte was not UTF-8 turned its emoji and CJK into mojibake, past what ftfy
    mends. UTF-16 with its byte-order mark (Notepad's "Unicode") is read as such: as Windows-1252 it became a NUL
    between every letter. :func:`decoded_text` also says whether the fallback was needed."""
    return decoded_text(data)[0]


def decoded_text(data: bytes) -> tuple[str, bool]:
    """(:func:`decode_text`'s text, whether ``data`` was read without its Windows-1252 fallback): one decoding for
    both (the index read each caption twice, once to decode it and once to check it)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16"), True  # (the fallback of a broken one is no legacy encoding either way)
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", _CP1252_BYTES), False


def is_utf8(data: bytes) -> bool:
    """Whether :func:`decode_text` reads ``data`` without its Windows-1252 fallback."""
    return decoded_text(data)[1]


def not_utf8_said(where: str, count: int, example: str) -> str:
    """The warning for ``count`` caption files of ``where`` (a shard, a folder) that are not UTF-8."""
    return (f"{where}: {count} caption file(s) are not UTF-8 ({example}); their bytes that are not were read as "
            "Windows-1252 (a legacy file's café), which garbles text in other encodings (Shift-JIS, GBK): write "
            "the captions as UTF-8")


def _cp1252_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    """The decode error handler of :func:`decode_text`: the bytes that are not UTF-8, read as Windows-1252 (five
    byte values unassigned there are U+FFFD)."""
    return error.object[error.start:error.end].decode("cp1252", "replace"), error.end


_CP1252_BYTES = "kizuna.cp1252_bytes"
codecs.register_error(_CP1252_BYTES, _cp1252_bytes)


def parse_captions(text: str) -> tuple[str, ...]:
    # not str.splitlines(), which also breaks at U+2028, \x85, \x0c, \x1c-\x1e: web text holds them, and one
    # caption became several (9 captions for 5 images' worth; a CSV of the same text kept one)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return tuple(c for c in (line.strip() for line in lines) if c)


def parse_label(text: str) -> int:
    text = text.strip()
    whole, dot, fraction = text.partition(".")
    if dot and whole and not fraction.strip("0"):  # "3.0": pandas writes an int column holding a NaN as floats
        text = whole
    if not text.isascii() or "_" in text:  # int() reads "1_0" as 10 and Arabic-Indic digits: a damaged side-car
        return -2  # read as another class without a word
    try:
        value = int(text)
    except ValueError:
        return -2
    # past 2^31 no class index (a 20-digit ID as a label overflowed the index's int64 column: a bare
    # OverflowError naming no file); a bad label, counted with where it is
    return value if 0 <= value < 2**31 else -2


def read_range(fd: int, offset: int, size: int) -> bytes:
    if hasattr(os, "pread"):
        data = os.pread(fd, size, offset)
        # pread may return short on some filesystems without being at EOF; loop until done or EOF.
        while len(data) < size:
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data
    # No pread (Windows): seek and read, then put the offset back. It is shared with whoever else reads through
    # ``fd`` (the tarfile scan's own handle; a dup'ed descriptor shares it too), and moving it broke every scan.
    here = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        chunks, left = [], size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.lseek(fd, here, os.SEEK_SET)


def clear_cache() -> None:
    """Forget the indexed shards, and which damaged or scattered ones were warned about."""
    global _memory_samples
    with _lock:
        _memory_cache.clear()
        _memory_samples = 0
    reset_warnings()


def reset_warnings() -> None:
    """Each damaged or scattered shard is warned about once (its index is fetched many times in a run); once per
    command, not per process: a second command in one process (`kizuna.apps.cli.main` from a notebook) printed the
    skip counts without the reason the samples were lost."""
    with _lock:
        _warned.clear()
        _UNWRITABLE_CACHES.clear()


def _fingerprint(path: str) -> Fingerprint:
    real = os.path.realpath(path)
    st = os.stat(real)
    # not st_dev: it differs per mount (NFS, FUSE), and a cache shared by several nodes never hit
    return real, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


def _cache_file(cache_dir: str | os.PathLike, real: str) -> Path:
    digest = hashlib.sha1(real.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return Path(cache_dir).expanduser() / f"{digest}.json"


@contextlib.contextmanager
def _cache_entry(file: Path, most: int):
    """A cache file opened to read, or None where it is no plain file of at most ``most`` bytes (an index holds
    the shard's captions: ``most`` is a bound from its size). The folder is shared: a FIFO planted under an entry's
    name hung every run that read it (no word, no end), and a link to /dev/zero was read without end."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    with open(os.open(file, flags), encoding="utf-8") as f:  # (a missing file: OSError, a miss)
        info = os.fstat(f.fileno())
        yield f if stat.S_ISREG(info.st_mode) and info.st_size <= most else None


def _load_disk(cache_dir, fp: Fingerprint, path: str) -> TarShardIndex | None:
    file = _cache_file(cache_dir, fp[0])
    try:
        with _cache_entry(file, most=(16 << 20) + 8 * fp[2]) as f:
            blob = json.load(f) if f is not None else None
    except (OSError, ValueError, RecursionError):  # (a file nested thousands deep: another's, or hostile)
        return None
    if blob is None:
        return None
    try:
        if blob.get("version") != _CACHE_VERSION or blob.get("fingerprint") != list(fp):
            return None
        data = blob["index"]
        data["path"] = path
        data["captions"] = [None if c is None else tuple(c) for c in data["captions"]]
        idx = TarShardIndex(**data)
    except (AttributeError, KeyError, TypeError):  # JSON of another shape (another tool's file): scan again
        return None
    # A shared cache folder is written by everyone who can write there: offsets outside the shard (-5 ended in a
    # TypeError deep in decoding) or columns of unequal length are no index of this shard; scan it again
    columns = (idx.keys, idx.offsets, idx.sizes, idx.image_exts, idx.captions, idx.labels)
    if len({len(c) for c in columns}) != 1 or not all(
            isinstance(o, int) and isinstance(n, int) and 0 <= o and 0 <= n and o + n <= fp[2]
            for o, n in zip(idx.offsets, idx.sizes)):
        return None
    # nor labels parse_label never gives (a cache of version 8 kept a .cls of 3000000000, which then asked for
    # 3e9 class names, or overflowed the int64 column)
    if not all(isinstance(label, int) and -2 <= label < 2**31 for label in idx.labels):
        return None
    return idx


def _save_disk(cache_dir, fp: Fingerprint, idx: TarShardIndex) -> None:
    file, tmp = _cache_file(cache_dir, fp[0]), None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so concurrent ranks never read a half-written cache file.
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": _CACHE_VERSION, "fingerprint": list(fp), "index": asdict(idx)}, f)
        # mkstemp's 0600 kept other users of a shared KIZUNA_INDEX_CACHE from reading it (they rescanned)
        from kizuna.models.checkpoint import process_umask, replace_retrying

        os.chmod(tmp, 0o666 & ~process_umask())
        replace_retrying(tmp, file)
    except BaseException as e:
        # a full disk left one more half-written temp file per run, and Ctrl-C (or the command line's SIGTERM)
        # one in KIZUNA_INDEX_CACHE; the temp is gone once renamed
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if not isinstance(e, OSError):
            raise
        if file.parent not in _UNWRITABLE_CACHES:  # once a folder: a read-only cache warned once per shard (1,000
            _UNWRITABLE_CACHES.add(file.parent)  # lines for a 1,000-shard dataset, each naming another temp file)
            warnings.warn(f"could not write tar index cache {file}: {e} (the shards are indexed all the same, and "
                          f"the other files of {file.parent} not written are not said again)", RuntimeWarning,
                          stacklevel=3)


_UNWRITABLE_CACHES: set[Path] = set()


def index_tar(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> TarShardIndex:
    path = os.fspath(path)
    fp = _fingerprint(path)
    with _lock:
        held = _memory_cache.get(fp[0])
    idx = held[1] if held is not None and held[0] == fp else None
    if idx is None and cache_dir is not None:
        idx = _load_disk(cache_dir, fp, path)
    if idx is None:
        idx = _scan(path, fp[2])
        if cache_dir is not None:
            _save_disk(cache_dir, fp, idx)
    with _lock:
        global _memory_samples
        held = _memory_cache.pop(fp[0], None)
        if held is not None:
            _memory_samples -= len(held[1])
        # past the bound the newest is not kept (not the oldest dropped: a data set read in order, over the bound,
        # then lost each shard just before the next pass asked for it, and every shard was scanned again)
        if _memory_samples + len(idx) <= MEMORY_CACHE_SAMPLES or not _memory_cache:
            _memory_cache[fp[0]] = (fp, idx)
            _memory_samples += len(idx)
        first_time = fp not in _warned
        _warned.add(fp)
    if idx.scattered and first_time:
        _say("scattered", idx.scattered,
             f"tar shard {path}: the members of {idx.scattered} sample(s) are not next to each other (key "
             f"{idx.scattered_key!r} comes back after other keys); a sample is a run of adjacent members, as "
             f"WebDataset reads it, so their images and texts were not paired. Repack the shard in name order: "
             f"`tar --sort=name -cf {os.path.basename(path)} -C FOLDER .`")
    if idx.not_utf8 and first_time:
        _say("not_utf8", idx.not_utf8, not_utf8_said(f"tar shard {path}", idx.not_utf8, f"key {idx.not_utf8_key!r}"))
    if idx.truncated and first_time:
        _say("truncated", idx.skipped.get("truncated", 0),
             f"tar shard {path} is truncated or corrupt ({idx.detail}); indexed {len(idx)} samples, "
             f"skipped {idx.skipped.get('truncated', 0)} partial sample(s) at the damage")
    return idx


# What the shards of one indexing pass (shard_warnings_summed) had to say beyond the first few of each kind:
# a 500-shard folder of damaged shards printed 1,000 warning lines, its summary lost among them
_SUMMED = threading.local()
SHARDS_SAID = 3
_MORE = {"scattered": "samples whose members are not next to each other ({n} of them, not paired)",
         "not_utf8": "captions that are not UTF-8 ({n} caption files; their odd bytes read as Windows-1252)",
         "truncated": "truncated or corrupt ({n} partial samples skipped at the damage)"}


def _say(kind: str, count: int, message: str) -> None:
    held = getattr(_SUMMED, "held", None)
    if held is not None:
        said, more, n = held.get(kind, (0, 0, 0))
        if said >= SHARDS_SAID:
            held[kind] = (said, more + 1, n + count)
            return
        held[kind] = (said + 1, more, n)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


@contextlib.contextmanager
def shard_warnings_summed():
    """Within it, index_tar says the first few shards of each kind of damage as it finds them and the rest in one
    line at the end (per thread; nested: the outermost sums)."""
    if getattr(_SUMMED, "held", None) is not None:
        yield
        return
    _SUMMED.held = held = {}
    try:
        yield
    finally:
        _SUMMED.held = None
        for kind, (said, more, n) in held.items():
            if more:
                warnings.warn(f"... and {more} more tar shards, as the {said} above: {_MORE[kind].format(n=n)}",
                              RuntimeWarning, stacklevel=3)


# A compressed file's first bytes, and the tool that writes it out uncompressed.
_COMPRESSED = ((b"\x1f\x8b", "gzip", "zcat"), (b"BZh", "bzip2", "bzcat"), (b"\xfd7zXZ", "xz", "xzcat"),
               (b"\x28\xb5\x2f\xfd", "zstd", "zstdcat"))


def _scan(path: str, file_size: int) -> TarShardIndex:
    out = TarShardIndex(path=path)
    with open(path, "rb") as raw:
        fd = raw.fileno()
        magic = read_range(fd, 0, 6)
        for prefix, kind, tool in _COMPRESSED:
            # a tar header says "ustar" at byte 257: a member named "BZh..." is no bzip2 stream
            if magic.startswith(prefix) and read_range(fd, 257, 5) != b"ustar":  # read as a tar it was "truncated or corrupt (bad checksum)"
                out.truncated = True
                out.detail = (f"{kind}-compressed; shards are read by position, so they must be uncompressed "
                              f"tars: `{tool} {os.path.basename(path)} > plain.tar`")
                return out
        try:
            tf = tarfile.open(fileobj=raw, mode="r:")
        except tarfile.TarError as e:
            out.truncated = True
            out.detail = f"not a readable uncompressed tar: {e}"
            return out

        group_key: str | None = None
        group: dict[str, tarfile.TarInfo] = {}
        duplicate = False
        seen: set[str] = set()  # keys of the runs flushed so far
        stored: dict[str, tuple[int, int]] = {}  # a regular member's (offset_data, size), for the links to it
        stop_detail = ""
        try:
            for member in tf:
                out.num_members += 1
                if member.islnk() or member.issym():
                    member = _linked(member, stored)
                    if member is None:  # a link to a file this shard does not hold (before it): no bytes here
                        continue
                elif not member.isreg():
                    continue
                elif posixpath.basename(member.name).startswith("._"):  # macOS tar's AppleDouble metadata before
                    continue  # each file with extended attributes: key "" split every sample (WebDataset skips it)
                elif _not_a_sample_file(member.name):  # as WebDataset: a README between a.jpg and a.txt split the
                    continue  # pair (caption lost, a "repack" warning), an __index__ or .DS_Store was a skip
                elif member.issparse():  # GNU sparse: its data is not `size` bytes at offset_data (a caption read
                    out._skip("sparse_member", member.name)  # so held the next members' headers and bytes); nor
                    continue  # is a hard link's to it
                else:
                    stored[_member_path(member.name)] = (member.offset_data, member.size)
                key, ext = split_key(member.name)
                if key != group_key:
                    if group_key is not None:
                        _flush(out, fd, group_key, group, file_size, last=False, duplicate=duplicate)
                        seen.add(group_key)
                    if key in seen:  # `tar cf` of a folder stores files in directory order, not name order
                        out.scattered += 1
                        out.scattered_key = out.scattered_key or key
                    group_key, group, duplicate = key, {}, False
                duplicate = duplicate or ext in group  # "000.png" twice: which one the caption means is unknown
                group[ext] = member
        except tarfile.TarError as e:
            stop_detail = f"scan stopped at byte {tf.offset}: {e}"
        end = tf.offset
        out.detail = stop_detail or _end_problem(fd, end, file_size)
        out.truncated = bool(out.detail)
        if group_key is not None:
            _flush(out, fd, group_key, group, file_size, last=out.truncated, duplicate=duplicate)
    return out


def _linked(link: tarfile.TarInfo, stored: dict[str, tuple[int, int]]) -> tarfile.TarInfo | None:
    """A hard or symbolic link member as the regular member it points to, under its own name: `tar cf` stores a
    file's second hard link as a link to the first (images de-duplicated with hard links), and each such
    sample was counted as a missing image. None where the target is not a regular member stored earlier in the
    shard (a link out of it, or to a later or missing member)."""
    target = _member_path(link.linkname if link.islnk() else posixpath.join(posixpath.dirname(link.name),
                                                                            link.linkname))
    if target not in stored:
        return None
    member = tarfile.TarInfo(link.name)
    member.offset_data, member.size = stored[target]
    return member


def _member_path(name: str) -> str:
    """A member's name as links name it: `tar cf x.tar .` stores ./0001.jpg, which a symbolic link's target,
    joined to its folder and normalised, reads as 0001.jpg."""
    return posixpath.normpath(name)


def _end_problem(fd: int, end: int, file_size: int) -> str:
    """Why the archive does not end cleanly at ``end``, where tarfile stopped ("" when it does). tarfile stops
    quietly at any all-zero header block, so a zeroed block mid-shard, a preallocated file written only in
    part, or ``cat a.tar b.tar`` looked like a clean end and lost every sample after it: a real end is zero
    padding only, no longer than the end-of-archive marker plus one record (tar pads to a record)."""
    tail = file_size - end
    if tail <= 0:
        return f"archive ends at byte {file_size} without an end-of-archive marker"
    data_at = _first_nonzero(fd, end, file_size)
    if tail < _BLOCK or data_at is not None and data_at < end + _BLOCK:  # no whole zero block: no marker
        return f"invalid header at byte {end}; the rest of the shard is unreadable"
    if data_at is not None:
        return (f"{file_size - data_at} bytes of data after the end-of-archive marker at byte {end}, from byte "
                f"{data_at}: a zeroed header block, or two tars joined with cat; write or fetch the shard again")
    if tail > _MAX_END_PADDING:
        return (f"{tail} zero bytes after the end-of-archive marker at byte {end}, more than tar's "
                f"{_MAX_END_PADDING} bytes of padding: a preallocated or half-written file; fetch it again")
    return ""


def _first_nonzero(fd: int, start: int, stop: int, chunk: int = 1 << 20) -> int | None:
    """Offset of the first non-zero byte in ``[start, stop)``, read a chunk at a time (a zeroed tail can be GBs)."""
    pos = start
    while pos < stop:
        data = read_range(fd, pos, min(chunk, stop - pos))
        if not data:
            return None
        stripped = data.lstrip(b"\0")
        if stripped:
            return pos + len(data) - len(stripped)
        pos += len(data)
    return None


def _flush(out: TarShardIndex, fd: int, key: str, group: dict, file_size: int, last: bool,
           duplicate: bool = False) -> None:
    if duplicate:  # a member name repeated within the sample: pairing either copy could be wrong
        out._skip("duplicate_member", key)
        return
    # Members cut off by truncation can only be at the very end, but checking every group is cheap.
    readable = {ext: m for ext, m in group.items() if m.offset_data + m.size <= file_size}
    if last and len(readable) < len(group):
        out._skip("truncated", key)
        return
    # photo.000.jpg, photo.001.jpg, ...: one key "photo" (WebDataset's keys end at the first dot) whose
    # extensions 000.jpg, ... are no image; each such image is a sample lost, not one missing_image
    image_ext = next((e for e in IMAGE_EXTS if e in readable), None)
    if image_ext is None:
        # only where the sample has no image of its own: 0001.mask.png beside 0001.jpg is a part of a kept sample
        dotted = [ext for ext in group if "." in ext and ext.rsplit(".", 1)[1] in IMAGE_EXTS]
        for ext in dotted:
            out._skip("dotted_key", f"{key}.{ext} (WebDataset keys end at the first dot)")
        # an image of a type shards are not read for (a .gif: its sample was counted as missing its image)
        other = [ext for ext in group if "." + ext.lower() in _OTHER_IMAGE_TYPES]
        if other and not dotted:
            out._skip("unsupported_image", f"{key}.{other[0]} (shard samples are read for "
                                           f"{', '.join('.' + e for e in IMAGE_EXTS)})")
        elif not dotted:
            out._skip("truncated" if last else "missing_image", key)
        return
    image = readable[image_ext]
    if image.size == 0:
        out._skip("empty_image", key)
        return
    captions = None
    if _CAPTION_EXT in readable:
        m = readable[_CAPTION_EXT]
        text, utf8 = decoded_text(read_range(fd, m.offset_data, m.size))
        captions = parse_captions(text)
        if not utf8:
            out.not_utf8 += 1
            out.not_utf8_key = out.not_utf8_key or key
    label = -1
    if _LABEL_EXT in readable:
        m = readable[_LABEL_EXT]
        # as a side-car .cls is read (a byte-order mark, UTF-16): decoded as ASCII it was a bad_label here only
        label = parse_label(decode_text(read_range(fd, m.offset_data, m.size)))
    if last and captions is None and label == -1:
        # In a damaged shard a lone image at the cut most likely lost its text member to the cut.
        out._skip("truncated", key)
        return
    out.keys.append(key)
    out.offsets.append(image.offset_data)
    out.sizes.append(image.size)
    out.image_exts.append(image_ext)
    out.captions.append(captions)
    out.labels.append(label)
