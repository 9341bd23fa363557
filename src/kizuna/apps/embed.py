"""Write L2-normalised embeddings of a folder of images (or one image) or a text file (one text per line).

  kizuna embed --model runs/demo/checkpoints/best --images photos/ --out photos.npy
  kizuna embed --model runs/demo/checkpoints/best --texts captions.txt --out captions.parquet

`.npy` holds a float32 [N, D] array (a `.txt` beside it lists the inputs in row order, one a line: a line
break inside a name or text is written as its escape, \\n, \\u2028, so a name holding those very characters,
a backslash and an n, reads alike; `.parquet` keeps every name exactly) or `.parquet`, which
holds one row per input with its path/text and embedding. Corrupt images are skipped and counted.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kizuna.apps.common import (add_loader_timeout_argument, add_model_argument, add_progress_argument, at_least_zero,
                                 check_writable, load_model_from_args, one_line, refuse_under_torchrun)
from kizuna.extras import require


def add_arguments(p):
    add_model_argument(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images (searched recursively), or one image file")
    src.add_argument("--texts", help="text file, one text per line")
    p.add_argument("--out", required=True, help="output file: .npy or .parquet")
    p.add_argument("--batch-size", type=int, default=64, help="images or texts encoded per batch (default 64)")
    p.add_argument("--workers", "--num-workers", type=at_least_zero, default=2,
                   help="image decoding processes (default 2; 0 = decode in the main process)")
    add_loader_timeout_argument(p)
    add_progress_argument(p)


class _ImageFiles:
    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from kizuna.data.images import ImageError, load_image

        try:
            return i, self.preprocess(load_image(self.paths[i])), ""
        except ImageError as e:
            return i, None, str(e)


def _collate(items):
    import torch

    ok = [(i, x) for i, x, _ in items if x is not None]
    errors = [e for _, x, e in items if x is None]
    idx = [i for i, _ in ok]
    # torch's collate stacks straight into shared memory in a worker: a /dev/shm too small fails there, as an
    # error the main process gets (stacked privately, the batch was lost on its way and the main process hung)
    return idx, (torch.utils.data.default_collate([x for _, x in ok]) if ok else None), errors


def _check_images(folder) -> None:
    if not os.path.exists(folder):  # Path.exists raised on a long `::` list of shards (ENAMETOOLONG)
        raise FileNotFoundError(f"--images {folder}: no such folder or file")


def embed_images(model, folder, batch_size=64, workers=2, device="cpu", progress=True):
    import torch
    from kizuna.eval.encode import progress_bar

    import kizuna
    from kizuna.data.images import list_images
    from kizuna.data.loader import before_workers_start, loader_timeout, watched_batches, worker_init

    _check_images(folder)
    paths = list_images(folder) if Path(folder).is_dir() else [Path(folder)]  # one image, as `analyze` takes
    if not paths:
        shards = Path(folder).is_dir() and any(Path(folder).rglob("*.tar"))
        raise ValueError(f"{folder}: no images found (extensions .jpg .png .webp ...)" + (
            "; it holds .tar shards, and embed reads image files only (kizuna eval reads shards)" if shards else ""))
    ds = _ImageFiles(paths, kizuna.get_preprocess(model))
    before_workers_start(workers)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                                         worker_init_fn=worker_init() if workers else None,
                                         timeout=loader_timeout(workers),
                                         generator=torch.Generator())  # (not the caller's global RNG)
    from kizuna.eval.encode import eval_mode

    kept, errors, emb = [], [], None
    # eval mode, as every evaluator encodes: a model left in train mode embedded with dropout and patch dropout on
    with torch.inference_mode(), eval_mode(model):
        for idx, batch, errs in progress_bar(watched_batches(loader), total=len(loader), desc="embedding images",
                                             enabled=progress):
            errors += errs
            if batch is not None:
                emb = _into_rows(emb, len(paths), len(kept), model.encode_image(batch.to(device), normalize=True))
                kept += idx
    if emb is None:
        raise ValueError(f"{folder}: none of the {len(paths)} images could be read ({errors[0]})")
    from kizuna.eval.encode import check_finite

    emb = emb[:len(kept)]  # (a view: the rows of the images read)
    check_finite(emb, None, f"{folder}: images")  # NaN rows were written and reported as "wrote N"; eval refuses
    return [str(paths[i]) for i in kept], emb.numpy(), errors


def _into_rows(out, rows: int, at: int, batch):
    """``batch`` written into rows ``at..`` of ``out``, a float32 CPU ``[rows, D]`` tensor made at the first batch: a
    list of batches and their concatenation held the embeddings twice (100,000 texts at 2,048-d: 3.4 GB for an
    800 MB result)."""
    import torch

    if out is None:
        out = torch.empty(rows, batch.shape[1], dtype=torch.float32)
    out[at:at + len(batch)] = batch
    return out


def embed_texts(model, path, batch_size=256, device="cpu", progress=True):
    """-> (texts, embeddings [N, D]). A line with nothing left once cleaned ("&nbsp;") is skipped and named, as
    an unreadable image is: it stopped the whole job midway, reported at its index within a batch."""
    import sys

    from kizuna.eval.encode import progress_bar

    import kizuna
    from kizuna.eval.datasets import numbered_lines
    from kizuna.eval.zeroshot import encode_texts

    lines = numbered_lines(path)
    if not lines:
        raise ValueError(f"{path}: no non-empty lines")
    present = {n for n, _ in lines}
    blank = [n for n in range(1, lines[-1][0]) if n not in present]  # between texts: row N is no longer line N
    if blank:
        print(f"skipped {len(blank)} blank line(s) (rows follow the lines with text; the .txt beside a .npy names "
              "each row's): line " + ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else ""),
              file=sys.stderr)
    tokenizer = kizuna.get_tokenizer(model)
    count = getattr(tokenizer, "encode_batch", None)  # ids without the start/end tokens
    if count is not None:
        # token counts only, a chunk of lines at a time: the ids of a whole file of captions held 679 B a line
        texts = [text for _, text in lines]
        lengths = [len(x) for i in range(0, len(texts), 8192) for x in count(texts[i:i + 8192])]
        empty = [n for (n, _), length in zip(lines, lengths) if not length]
        if empty:
            print(f"skipped {len(empty)} line(s) with no text left once cleaned (not in the output): line "
                  + ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else ""), file=sys.stderr)
            lengths = [length for length in lengths if length]
            dropped = set(empty)
            lines = [(n, text) for n, text in lines if n not in dropped]
            if not lines:
                raise ValueError(f"{path}: no line has any text left once cleaned")
        # CLIP's BPE adds a start and an end token, SigLIP's an end token only
        added = 2 if getattr(tokenizer, "sot_token_id", None) is not None else 1
        cut = sum(length + added > tokenizer.context_length for length in lengths)
        if cut:
            print(f"note: {cut} of {len(lines)} texts are longer than the model's {tokenizer.context_length} tokens; "
                  "they are embedded cut to that length", file=sys.stderr)
    texts = [text for _, text in lines]
    emb = None
    for i in progress_bar(range(0, len(texts), batch_size), total=-(-len(texts) // batch_size), desc="embedding texts",
                          enabled=progress):
        emb = _into_rows(emb, len(texts), i,
                         encode_texts(model, tokenizer, texts[i : i + batch_size], batch_size, device))
    from kizuna.eval.encode import check_finite

    check_finite(emb, None, f"{path}: texts")  # as `kizuna eval` refuses them: NaN rows were written, "wrote N" said
    return texts, emb.numpy()


PARQUET_ROWS = 16384  # rows per parquet row group (and per chunk of the embedding column)


def write_embeddings(out: Path, names: list[str], emb: np.ndarray, column: str):
    """``out`` (.npy with a .txt of its rows beside it, or .parquet), each written whole or not at all."""
    from kizuna.models.checkpoint import atomic_write

    if out.suffix not in (".npy", ".parquet"):
        raise ValueError(f"{out}: output must end in .npy or .parquet")
    # a file name that is not UTF-8 (Latin-1 "caf\xe9.jpg") reaches Python as lone surrogates, which no UTF-8
    # writer takes: it failed after the .npy was written, beside an empty row list. Such bytes are written as
    # \xNN escapes, and the rows are made before anything is written. Paths only: texts (a file read as UTF-8)
    # are text already, and os.fsencode of "caf\xe9" failed under a non-UTF-8 locale (LC_ALL=C), writing nothing.
    if column == "path":
        names = [os.fsencode(n).decode("utf-8", "backslashreplace") if isinstance(n, str) else n for n in names]
    emb = emb.astype(np.float32, copy=False)  # (a copy of the whole matrix, even when it was float32 already)
    if out.suffix == ".npy":
        rows = ("\n".join(map(one_line, names)) + "\n").encode("utf-8")
        _write_pair(out, lambda f: np.lib.format.write_array(_ChunkWriter(f), emb, allow_pickle=False),
                    out.with_suffix(".txt"), lambda f: f.write(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if emb.ndim != 2:  # (a row's list of numbers: one vector was a float column, 1-D an IndexError)
            raise ValueError(f"{out}: embeddings must be a matrix [rows, dimensions], got shape {emb.shape}")

        # the embedding column over emb's own memory, in row groups of PARQUET_ROWS: list(emb) was converted into
        # a copied list<float> column and dictionary encoding was tried on it (+1.0 GB to write 391 MB; +0.1 now)
        def rows(part: np.ndarray):
            offsets = np.arange(len(part) + 1, dtype=np.int32) * part.shape[1]
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(part).reshape(-1)))

        embedding = pa.chunked_array([rows(emb[i:i + PARQUET_ROWS]) for i in range(0, len(emb), PARQUET_ROWS)],
                                     type=pa.list_(pa.float32()))
        table = pa.table({column: names, "embedding": embedding})

        def write_parquet(tmp):
            with open(tmp, "wb") as f:  # opened here: pyarrow takes a path as UTF-8 (a Latin-1 folder name failed)
                pq.write_table(table, f, row_group_size=PARQUET_ROWS, use_dictionary=[column])

        try:
            atomic_write(out, write_parquet)
        except OSError as e:  # (a full disk was pyarrow's bare "[Errno 28] No space left on device")
            raise _write_failed(e, f"could not write {out} ({e.strerror or e}); the file there before is "
                                   "unchanged") from e


class _ChunkWriter:
    """A file as numpy sees any writable object, so np.lib.format.write_array writes it a buffer at a time through
    Python's file: given the file itself, it writes through a duplicated C file handle whose last flush's error it
    does not check (a failed write of a small file was renamed into place as a cut-off .npy with exit 0), and
    serialising to memory first held the matrix twice more."""

    def __init__(self, file):
        self.write = file.write


def _write_pair(out: Path, data, rows_path: Path, rows) -> None:
    """The .npy and its .txt of row names, both or neither. Written one after the other, a full disk renamed
    the new .npy into place and then failed on the .txt: the old .txt named the new rows. Both temp files
    are written first and then renamed; a failure removes the temp files, and once a rename is done also
    both final names (the old partner of a new file is stale), so no .npy is left beside another's row list.
    The error names both files.

    Ctrl-C or SIGTERM during the renames is held until both are done (it landed between them, or after the first
    before its bookkeeping: the old .txt beside the new .npy, or both new files deleted); what is undone is read
    from which temp files are still there. The old .txt goes first, so a kill that nothing can hold (SIGKILL)
    leaves at worst a .npy with no row list, never one with another's."""
    from kizuna.models.checkpoint import filled_temp, replace_retrying, signals_held

    temps = []
    had_rows = rows_path.exists()
    try:
        for path, fill in ((out, data), (rows_path, rows)):
            # the file is closed within: a write error that the last flush finds is raised
            temps.append(filled_temp(path, lambda tmp, fill=fill: _filled(tmp, fill)))
        with signals_held():
            rows_path.unlink(missing_ok=True)
            replace_retrying(temps[0], out)
            replace_retrying(temps[1], rows_path)
    except BaseException as e:
        renamed = len(temps) == 2 and not os.path.exists(temps[0])  # the new .npy is in
        if renamed and os.path.exists(temps[1]):  # ... its row list is not: neither may stay
            for path in (out, rows_path):
                path.unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise  # (both renamed: a signal held until then, with the pair complete)
        if renamed:
            left = "neither is left"
        elif had_rows and not rows_path.exists():
            left = f"{out} is unchanged but its old row list was removed"
        else:
            left = "the files there before are unchanged"
        raise _write_failed(e, f"could not write {out} and its row list {rows_path} ({e.strerror or e}); {left}") from e
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _write_failed(error: OSError, message: str) -> OSError:
    """``error`` said as ``message``: OSError(errno, ...) is the errno's subclass (PermissionError ...), which the CLI
    reports in one line."""
    return OSError(error.errno, message) if error.errno else OSError(message)


def _filled(path, fill) -> None:
    """``fill(file)`` into ``path``, opened for writing; closing it raises what its last flush met."""
    with open(path, "wb") as f:
        fill(f)


def _same_file(a: Path, b: Path) -> bool:
    """One file by path, or by the file system: emb.txt is Emb.txt on macOS and Windows (and a link is its
    target), where --texts Emb.txt --out emb.npy would write the row list over the input."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def run(args):
    refuse_under_torchrun("kizuna embed")
    for flag, value in (("--images", args.images), ("--texts", args.texts), ("--out", args.out)):
        if value is not None and not value.strip():  # an unset shell variable: it ran the other branch, or "."
            raise ValueError(f"{flag} is empty; give a {'folder' if flag == '--images' else 'file'}")
    out = Path(args.out)
    if out.suffix not in (".npy", ".parquet"):
        raise ValueError(f"{out}: output must end in .npy or .parquet")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    rows = out.with_suffix(".txt")  # a .npy's row list
    if out.suffix == ".npy" and args.texts is not None and _same_file(rows, Path(args.texts)):
        raise ValueError(f"--out {out} would write its list of rows to {rows}, which is the input --texts; "
                         f"choose another --out (e.g. {out.with_name(out.stem + '_emb.npy')})")
    from kizuna.eval.datasets import is_file_argument

    # checked before the model loads and anything is embedded: they failed after all the work was done
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name ending in .npy or .parquet")
    if args.texts is not None and not is_file_argument(args.texts):  # a pipe is a file too: read once, later
        raise FileNotFoundError(f"--texts {args.texts}: " + ("a folder; --texts takes a text file, one text per line"
                                                            if Path(args.texts).is_dir() else "no such file"))
    if out.suffix == ".npy" and rows.is_dir():  # it failed after the embedding, as "(Is a directory)"
        raise ValueError(f"--out {out} writes its list of rows to {rows}, which is a folder; move it or choose "
                         "another --out")
    if args.images is not None:  # before the model loads (embed_images checks it again, for callers from Python)
        _check_images(args.images)
    if out.suffix == ".parquet":  # write_embeddings needs it, after all the embedding: checked first
        require("pyarrow", f"--out {out} (.parquet)", "parquet", "give an --out ending in .npy")
    check_writable(out)
    model = load_model_from_args(args)
    if args.images is not None:
        names, emb, errors = embed_images(model, args.images, args.batch_size, args.workers, args.device,
                                          progress=not args.no_progress)
        write_embeddings(out, names, emb, "path")
        print(f"wrote {emb.shape[0]} image embeddings of dim {emb.shape[1]} to {out}")
        if errors:
            import sys

            print(f"skipped {len(errors)} unreadable image(s) (not in {out}): "
                  + "; ".join(errors[:5]) + ("; ..." if len(errors) > 5 else ""), file=sys.stderr)
    else:
        names, emb = embed_texts(model, args.texts, args.batch_size, args.device, progress=not args.no_progress)
        write_embeddings(out, names, emb, "text")
        print(f"wrote {emb.shape[0]} text embeddings of dim {emb.shape[1]} to {out}")
