"""Saving and loading models.

kizuna's own format is safetensors with the full config (model, preprocessing, tokenizer) stored in
the file's metadata, optionally beside a ``config.json`` in a folder. Foreign checkpoints (OpenAI
state dicts, Hugging Face CLIP/SigLIP folders) are converted at load time. Nothing here unpickles
arbitrary objects: ``.pt`` files go through ``torch.load(weights_only=True)``, and TorchScript
archives (which run code) are refused unless ``allow_jit=True``.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from kizuna.extras import MissingExtra

from .clip import ClipConfig, ClipModel
from .layers import float32_default, python_int
from .vit import VisionConfig, VisionTransformer, _pair, grid_warning_silenced, resample_pos_embed

FORMAT_KEY = "kizuna"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and what is wrong."""


def stored_scalar(tensor, name: str, source: str) -> float:
    """A checkpoint's logit scale or bias as a number, refused where it is NaN or inf (a diverged or damaged
    checkpoint: every zero-shot probability is NaN) with that said, not as a config that "does not describe a
    model this kizuna builds"."""
    import math

    value = float(tensor)
    if not math.isfinite(value):
        raise CheckpointError(f"{source}: its {name} is {value}: a diverged or damaged checkpoint (every zero-shot "
                              "probability would be NaN)")
    return value


def move_aside(path: Path, what: str, suffix: str = ".prev", note: str = "") -> Path:
    """``path`` (a file or folder an earlier run left) renamed to ``path`` + ``suffix``, replacing an older one,
    with a line saying so (and ``note``); a fresh run then starts with its own, not mixed into the earlier
    run's."""
    previous = path.with_name(path.name + suffix)
    if previous.is_dir() and not previous.is_symlink():
        shutil.rmtree(previous)
    os.replace(path, previous)
    print(f"{path} held an earlier run's {what}: moved to {previous.name}{note}; this run starts afresh",
          file=sys.stderr)
    return previous


def process_umask() -> int:
    """The process's umask, read without setting it (os.umask would, for a moment, in every thread). Where
    /proc does not say (macOS, old kernels), a probe folder made with mode 0777 shows it: a fixed 022 there made
    a private umask's (077) files readable to all, and lost a shared one's (002) group write. 022 only where
    even the probe fails. The probe's answer is kept (about a millisecond each, for every shard's index cache
    and every file written): a program that changes its umask later is not followed there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _probed_umask()


@functools.cache
def _probed_umask() -> int:
    try:
        parent = tempfile.mkdtemp(prefix="kizuna-umask-")
        try:
            probe = os.path.join(parent, "probe")
            os.mkdir(probe, 0o777)  # made under the umask, which takes its bits away
            try:
                return 0o777 & ~os.stat(probe).st_mode
            finally:
                os.rmdir(probe)
        finally:
            os.rmdir(parent)
    except OSError:
        return 0o022


def _file_mode(path: Path) -> int:
    """The permissions a rewritten ``path`` keeps: its own, or a new file's under the process's umask."""
    return path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~process_umask()


def make_temp_folder(parent: Path, prefix: str) -> Path:
    """A folder to fill and then rename into place, with a new folder's permissions (mkdtemp's are 0700)."""
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(folder, 0o777 & ~process_umask())
    return folder


def first_line(error: BaseException, limit: int = 120) -> str:
    """An error's first line (torch's further lines are advice for pickles), cut to ``limit`` characters at a
    word's end: cut mid-word it read "... please torch.save your che"."""
    line = (str(error).strip().splitlines() or [""])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def filled_temp(path: str | Path, write_fn) -> str:
    """A temp file beside ``path`` filled by ``write_fn(tmp)``, with the permissions ``path`` has or a new file's
    (the temp file's own are private to its owner), to be renamed onto ``path``; removed if the writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(path)
    # the name shortened so that a target near the file-name limit (255 bytes, not characters: 83 CJK ones are
    # 249) still has a temp name under it, cut at a character's boundary
    short = path.name[:200]
    while len(os.fsencode(short)) > 200:
        short = short[:-1]
    _sweep_stale_temps(path.parent, short)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{short}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        if os.path.isfile(tmp):
            os.chmod(tmp, mode)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


# Windows refuses a rename onto a file another process holds open (a reader of a live run's `latest` or best/, a
# virus scanner, the search indexer), for a moment: tried again for up to 1.5 s, as pip does (the run stopped with
# "[WinError 32]" at its next save, `latest` naming the step before). POSIX renames over an open file.
RENAME_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.75) if os.name == "nt" else ()


def replace_retrying(src, dst) -> None:
    """``os.replace(src, dst)``, tried again where Windows says the target is in use (:data:`RENAME_RETRIES`)."""
    for wait in (*RENAME_RETRIES, None):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if wait is None:
                raise
            time.sleep(wait)


# A temp file of a write this old is a killed one's (an out-of-memory kill, a preemption): removed at the next write
# of its target (each left one, `kizuna embed`'s the size of the embeddings, for ever). Younger ones may be another
# process's write in progress.
STALE_TEMP_SECONDS = 3600.0


def _sweep_stale_temps(folder: Path, short: str) -> None:
    import glob

    try:
        temps = list(folder.glob(f".{glob.escape(short)}.*.tmp"))
    except OSError:
        return
    for temp in temps:
        try:
            if time.time() - temp.stat().st_mtime > STALE_TEMP_SECONDS and temp.is_file():
                temp.unlink()
        except OSError:  # (gone meanwhile, or not ours to remove: the others are, and the write goes on)
            pass


def atomic_write(path: str | Path, write_fn) -> None:
    """Write through a temp file in the same folder, then rename: a crash never leaves half a file."""
    tmp = filled_temp(path, write_fn)
    try:
        replace_retrying(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dollars_as_text(fig) -> None:
    """Every "$" in a figure's text is a dollar sign: matplotlib read a pair as mathtext, so a name such as
    "$MODEL_$SEED" (two shell variables left unexpanded) raised a parse error after the evaluation, and nothing was
    saved; a pair that parsed was drawn as maths. kizuna writes no mathtext of its own. Tick labels are written
    again when the figure is drawn: a number formatter's (a log axis's powers) keep their maths, and labels given
    as strings (class names: a fixed or function formatter) are escaped as they are written. Each text and
    formatter once (a figure saved twice is not escaped twice), and every "$", one after a backslash too: outside
    mathtext matplotlib draws "\\$" as "$", so a label "\\$5" lost its backslash where that "$" was left alone."""
    from matplotlib.text import Text
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    def escaped(text):
        return text.replace("$", "\\$") if isinstance(text, str) and "$" in text else text

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for formatter, put in ((axis.get_major_formatter(), axis.set_major_formatter),
                                   (axis.get_minor_formatter(), axis.set_minor_formatter)):
                if isinstance(formatter, (FixedFormatter, FuncFormatter)) and not getattr(formatter, "_kizuna", 0):
                    wrapped = FuncFormatter(lambda x, pos=None, given=formatter: escaped(given(x, pos)))
                    wrapped._kizuna = 1  # (escaped already)
                    put(wrapped)
    for text in fig.findobj(Text):
        if "$" in text.get_text() and getattr(text, "_kizuna_text", None) != text.get_text():
            text.set_text(escaped(text.get_text()))
            text._kizuna_text = text.get_text()  # (escaped already, unless set anew)


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_write`: written in place, Ctrl-C or a full disk left a cut-off PNG
    where the earlier run's good one had been. The format comes from ``path``'s suffix, as savefig takes it (the
    temp file's own is .tmp), unless given; ``path``'s folder is made."""
    path = Path(path)
    _dollars_as_text(fig)
    if savefig_kwargs.get("format") is None:
        from matplotlib import rcParams

        savefig_kwargs["format"] = path.suffix[1:].lower() or rcParams["savefig.format"]
    atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs))
    return path


def drawn(plot, path: str | Path, note: str = "", **kwargs) -> list[str]:
    """``[name]`` of the figure ``plot(path, **kwargs)`` drew (``[]`` where it returned None: none to draw), or
    ``[]`` with a warning (``note`` after it) where drawing failed: without matplotlib, or with a broken one,
    `eval --out` printed its tables and then ended in a traceback with no results.json, and `kizuna demo` trained
    and then wrote no REPORT.md. The numbers do not need the figure."""
    try:
        made = plot(path, **kwargs)
    except Exception as e:  # noqa: BLE001 - matplotlib can fail in many ways (missing, a broken backend or font)
        import warnings

        warnings.warn(f"could not draw {path} ({type(e).__name__}: {e}){note}", RuntimeWarning, stacklevel=2)
        return []
    return [] if made is None else [Path(made).name]


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of a text file (results.json and the like: rewritten in place, a full disk or a kill
    mid-write left a cut-off file where the complete one had been), in UTF-8 whatever the locale (a class named
    "café" failed on a results.md under an ASCII or Windows locale, after the evaluation). A name from the file
    system or the command line (a dataset folder's) holds its undecodable bytes as lone surrogates, every non-ASCII
    byte under an ASCII locale (LC_ALL=C): "# model on 日本データ" failed on them once results.json was written.
    They are written as the bytes they stand for, and bytes that are not UTF-8 as \\xNN escapes."""
    text = _writable_text(text)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _writable_text(text: str) -> str:
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (from "\\ud800" in a JSON file)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM held back while the block runs, then delivered as they would have been (Ctrl-C's
    KeyboardInterrupt, the command line's SIGTERM exception, or the default end of the process). In the main
    thread only (where Python runs signal handlers, and can set them); elsewhere the block runs as it is. Blocking
    the signals with pthread_sigmask held nothing: the kernel hands a process's signal to another thread (torch's)
    that does not block it, and Python runs the handler in the main thread at its next instruction anyway."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    before = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not None:  # (None: set outside Python, and not to be put back)
                before[signum] = signal.signal(signum, lambda signum, frame: got.append(signum))
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(got):
            signal.raise_signal(signum)


def atomic_write_texts(files: list[tuple[str | Path, str]]) -> None:
    """:func:`atomic_write_text` of files that belong together (results.md and results.json), each written in full
    to its temp file before any is renamed, in the order given: a full disk at the second left the first new
    beside the other's old numbers (a results.md of this run, a results.json of the last)."""
    temps: list[str] = []
    try:
        for path, text in files:
            text = _writable_text(text)
            temps.append(filled_temp(path, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8")))
        with signals_held():  # (a Ctrl-C between the renames left a new results.md beside the old results.json)
            for (path, _), tmp in zip(files, temps):
                replace_retrying(tmp, path)
    except BaseException:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


def unwrapped_model(model: nn.Module) -> nn.Module:
    """The model inside torch.compile's and DistributedDataParallel's wrappers (their state dicts name its
    tensors under ``_orig_mod.`` / ``module.``; the evaluators already took a compiled model, save_model said
    "cannot save a OptimizedModule")."""
    while isinstance(model, nn.Module):  # (torch.compile of a compiled model gives a function)
        inner = model._modules.get("_orig_mod") or (model._modules.get("module")
                                                     if type(model).__name__ == "DistributedDataParallel" else None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def model_record(model: nn.Module) -> dict:
    """The kizuna record of ``model``'s config, checked as loading will read it: a config changed after the
    model was built (``model.cfg.loss = "siglip"`` without a logit bias) was saved, and then refused at load
    as "from another kizuna version"."""
    model = unwrapped_model(model)
    if isinstance(model, ClipModel):
        record = {"kind": "clip", "config": model.cfg.to_dict()}
    elif isinstance(model, VisionTransformer):
        record = {"kind": "vit", "config": model.cfg.to_dict()}
    else:
        raise TypeError(f"cannot save a {type(model).__name__}; expected ClipModel or VisionTransformer")
    try:
        model_from_record_config(record)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the model's config (model.cfg) was changed into one kizuna cannot build, so it would not "
                         f"load again: {e}") from None
    return record


def model_from_record_config(record: dict) -> ClipConfig | VisionConfig:
    kind = record.get("kind")
    if kind == "clip":
        return ClipConfig.from_dict(record["config"])
    if kind == "vit":
        return VisionConfig(**record["config"])
    raise CheckpointError(f"unknown model kind {kind!r} in checkpoint config")


def model_from_record(record: dict) -> nn.Module:
    cfg = model_from_record_config(record)
    return ClipModel(cfg) if isinstance(cfg, ClipConfig) else VisionTransformer(cfg)


def save_model(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Save to ``path``: a ``.safetensors`` file, or a folder holding model.safetensors + config.json. A ViT's
    preprocessing (``model.preprocess_config``, which a ViT loaded by path carries) is kept in ``extra``."""
    path, model = Path(path).expanduser(), unwrapped_model(model)  # ("~/m" was a folder named ~ in the cwd)
    record = model_record(model)
    carried = getattr(model, "preprocess_config", None)  # a ViT loaded by path: saved again, it keeps its own
    if isinstance(carried, dict) and "preprocess" not in (extra or {}):
        extra = {**(extra or {}), "preprocess": carried}
    if extra:
        from kizuna.apps.common import json_safe

        record["extra"] = json_safe(extra)  # strict JSON: a diverged run's NaN metrics are null
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {FORMAT_KEY: json.dumps(record)}
    if path.suffix == ".safetensors":
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        return path
    path.mkdir(parents=True, exist_ok=True)
    _drop_another_models_config(path / "config.json", record)
    atomic_write(path / "model.safetensors", lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write_text(path / "config.json", json.dumps({FORMAT_KEY: record}, indent=2))
    return path


def _drop_another_models_config(config: Path, record: dict) -> None:
    """The config.json of another model (another architecture) removed before this one's weights take the folder:
    a kill between the weights and the new config.json paired the new weights with the old architecture (GELU read
    as QuickGELU), which loaded without a word. Now such a folder refuses to load, naming its model.safetensors,
    which carries the whole record and loads as it is."""
    try:
        old = json.loads(config.read_text(encoding="utf-8")).get(FORMAT_KEY)
    except (OSError, ValueError, AttributeError, RecursionError):  # none, or not kizuna's: replaced as before
        return
    if isinstance(old, dict) and (old.get("kind"), old.get("config")) != (record.get("kind"), record.get("config")):
        config.unlink(missing_ok=True)


def drop_retired_keys(model: nn.Module, state_dict: dict) -> dict:
    """``state_dict`` less the tensors older kizuna versions saved for parts a module no longer has (the
    module lists them, relative to itself, in ``retired_state_dict_keys``, e.g. the MiniLM tower's BERT
    pooler), so those checkpoints still load strictly."""
    retired = {f"{name}.{key}" if name else key for name, module in model.named_modules()
               for key in getattr(module, "retired_state_dict_keys", ())}
    return {k: v for k, v in state_dict.items() if k not in retired} if retired else state_dict


def load_state_dict_strict(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load every tensor or fail with one error listing missing, unexpected and mis-shaped ones."""
    model.load_state_dict(fitting_state_dict(model, state_dict, source), strict=True)


def fitting_state_dict(model: nn.Module, state_dict: dict, source: str) -> dict:
    """``state_dict`` less retired keys, once it holds exactly ``model``'s tensors in their shapes; else one
    CheckpointError listing the missing, unexpected and mis-shaped ones. Only shapes are compared, so
    ``model`` may be built on the meta device: load_model checks there before allocating anything."""
    state_dict = drop_retired_keys(model, state_dict)
    own = model.state_dict()
    _refuse_misfit(source, sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own)),
                   _misshaped(state_dict, own))
    return state_dict


def _misshaped(tensors: dict, own: dict) -> list[str]:
    """The tensors of ``tensors`` (None for one a converter could not make) whose shape is not the one the
    model's tensor of that name (in ``own``) has."""
    return [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sorted(tensors.items())
            if v is not None and k in own and tuple(v.shape) != tuple(own[k].shape)]


def _refuse_misfit(source: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> None:
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{len(items)} {label} [{shown}]")
        raise CheckpointError(f"{source}: checkpoint does not fit the model: " + "; ".join(parts))


class TensorTaker:
    """A foreign checkpoint's tensors, taken by name by a converter (HF folders, the OpenAI layout). What is
    missing or mis-shaped is collected, not raised at once, so that :meth:`finish` raises one error listing
    every missing, left-over and mis-shaped tensor, as load_state_dict_strict does for kizuna's own."""

    def __init__(self, tensors: dict, source: str):
        self.tensors = dict(tensors)
        self.source = source
        self.missing: list[str] = []
        self.misshaped: list[str] = []

    def __call__(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
        """The tensor ``name``. With the ``shape`` it must have (where the converter reshapes, splits or
        concatenates it, which would fail on another shape) it is checked first, and a missing or
        mis-shaped one is stood in for by zeros of that shape, so conversion goes on to find the rest;
        without, a missing one is None."""
        t = self.tensors.pop(name, None)
        if t is None:
            self.missing.append(name)
        elif shape is not None and tuple(t.shape) != tuple(shape) and not t.numel() == math.prod(shape) == 1:
            self.misshaped.append(f"{name}: checkpoint {tuple(t.shape)} vs model {tuple(shape)}")
            t = None
        if t is None:
            return None if shape is None else torch.zeros(shape)
        return t if shape is None else t.reshape(shape)  # one-element tensors: () or (1,), either way

    def finish(self, out: dict, model: nn.Module) -> dict:
        """``out`` (the converted tensors, kizuna's names), or one CheckpointError listing every tensor missing
        from the checkpoint, left over in it, or of another shape than ``model`` (built on the meta device
        will do) has."""
        misshaped = self.misshaped + _misshaped(out, model.state_dict())
        _refuse_misfit(self.source, sorted(self.missing), sorted(self.tensors), misshaped)
        return out


@contextlib.contextmanager
def utf8_path(path: str | Path):
    """``path`` as text that a library taking a UTF-8 path accepts (safetensors' Rust reader, torch.load). A name
    the file system holds in another encoding (a Latin-1 folder name, undecodable bytes in Python) is no such text:
    a run trained into one saved its checkpoints, which then could not be loaded or resumed ("damaged"). The file is
    opened here and named by its descriptor (/dev/fd, Linux and macOS; Windows names are Unicode)."""
    text = str(path)
    try:
        text.encode("utf-8")
        reachable = True
    except UnicodeEncodeError:
        reachable = not os.path.isdir("/dev/fd")
    if reachable:
        yield text
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        yield f"/dev/fd/{fd}"
    finally:
        os.close(fd)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    if path.is_file() and not os.access(path, os.R_OK):  # safetensors reports it as "No such file or directory"
        raise CheckpointError(f"{path}: permission denied (the file is there, but this user cannot read it)")
    try:
        with utf8_path(path) as readable, safe_open(readable, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return meta, tensors


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())


# what a file given as a model often is instead (an image passed where the model goes, a config.json)
_NOT_TORCH = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
              b"RIFF": "a RIFF file (WebP?)", b"{": "JSON text", b"[": "JSON text"}


def _carries_a_record(file: Path) -> bool:
    """Whether ``file`` is a safetensors file with kizuna's record in its metadata (read from its header only)."""
    try:
        with utf8_path(file) as readable, safe_open(readable, framework="pt") as f:
            return FORMAT_KEY in (f.metadata() or {})
    except Exception:  # (none, or not a safetensors file: the folder is no model, as said)
        return False


def _record_of_the_weights(folder: Path, record, meta: dict):
    """The record saved inside model.safetensors (written with the weights, in one atomic file) where config.json's
    names another step: :func:`save_model` writes the weights, then config.json, and a kill between the two
    (a run extended, a model saved again in place) paired the new weights with the old step, metrics, class names.
    A config.json edited by hand for anything else is read as it is."""
    try:
        saved = json.loads(meta[FORMAT_KEY]) if FORMAT_KEY in meta else None
    except (json.JSONDecodeError, RecursionError):
        return record
    if not isinstance(saved, dict) or not isinstance(record, dict):
        return record
    step, saved_step = (record.get("extra") or {}).get("step"), (saved.get("extra") or {}).get("step")
    if step is not None and saved_step is not None and step != saved_step:
        import warnings

        warnings.warn(f"{folder}: config.json says step {step}, but the weights were saved at step {saved_step} (a save "
                      "interrupted between its two files?): the record saved with the weights is used", UserWarning,
                      stacklevel=4)
        return saved
    return record


def load_tensors(path: Path, mmap: bool = False):
    """``torch.load(weights_only=True)`` of a file kizuna did not necessarily write, every reader's one way in:
    a TorchScript archive is refused first, by kizuna. Before torch 2.6 (pyproject allows 2.3) a weights-only
    load handed such an archive to torch.jit.load, which runs code stored in it (CVE-2025-32434): an HF folder's
    pytorch_model.bin, a run's train_state.pt or a shared class-embedding cache could run it. Since 2.6 torch
    refuses it, in words advising weights_only=False."""
    if _is_torchscript(Path(path)):
        raise CheckpointError(f"{path}: is a TorchScript (JIT) archive, which executes code when loaded, not a file "
                              "of tensors; kizuna reads it only as a model given by itself with allow_jit=True "
                              "(CLI: --allow-jit), and only if you trust its source")
    with utf8_path(path) as readable:
        return torch.load(readable, map_location="cpu", weights_only=True, mmap=mmap)


def load_weights_only(path: Path):
    """``torch.load(weights_only=True)`` with an error that says what the file is. torch's own message advises
    loading with weights_only=False, which runs the file's code: wrong for an image or a JSON file passed as
    a model, and not advice kizuna gives for a pickle it refuses (none of torch's wording is repeated)."""
    try:
        return load_tensors(path)
    except CheckpointError:
        raise
    except Exception as e:
        with open(path, "rb") as f:
            head = f.read(16)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if head.startswith(b"PK") or head[:1] == b"\x80":  # a torch zip archive or a (legacy) pickle
            if not isinstance(e, pickle.UnpicklingError):  # the weights-only unpickler's refusal is this error
                raise CheckpointError(f"{path}: a damaged or truncated torch file ({type(e).__name__}: {first}); "
                                      "save or copy it again") from None
            # In kizuna's words: torch's message (its first line, since torch 2.6) advises re-running with
            # weights_only=False, which runs the file's code. The one thing of it worth saying is what the file
            # asked for ("Unsupported global: GLOBAL posix.system ..."), by a name of plain characters only.
            asked = re.search(r"GLOBAL ([\w.]{1,100})", str(e))
            raise CheckpointError(
                f"{path}: a torch file that a weights-only load refuses (it holds pickled objects other than "
                f"tensors{f'; it asks for {asked.group(1)}' if asked else ''}): unpickling them could run code "
                "from the file. kizuna reads tensors only and never unpickles other objects: save the model's "
                "state_dict, or use safetensors") from None
        kind = next((what for sig, what in _NOT_TORCH.items() if head.lstrip().startswith(sig)), None)
        raise CheckpointError(
            f"{path}: not a torch checkpoint{f' ({kind})' if kind else ''}; a model is a kizuna folder or "
            ".safetensors file, an OpenAI .pt file or a Hugging Face folder") from None


# (the CLI puts it in the words of a command without --allow-jit: apps.cli._in_this_commands_words)
TORCHSCRIPT_ADVICE = "pass allow_jit=True (CLI: --allow-jit) only if you trust its source"


def _load_torch_file(path: Path, allow_jit: bool) -> dict:
    if _is_torchscript(path):
        if not allow_jit:
            refused = CheckpointError(f"{path}: is a TorchScript (JIT) archive, which executes code when loaded; "
                                      + TORCHSCRIPT_ADVICE)
            refused.torchscript_path = str(path)  # (the CLI words its advice for a command without --allow-jit)
            raise refused
        import warnings

        with warnings.catch_warnings():  # deprecated for torch.export, which cannot read these archives
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return {k: v for k, v in module.state_dict().items()}
    return load_state_dict_file(path)


def load_state_dict_file(path: Path) -> dict:
    """A torch file of tensors (a plain state dict, or one under a "state_dict" key), loaded weights-only."""
    obj = load_weights_only(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


def follow_latest(path: str | Path) -> Path:
    """A trainer's ``checkpoints/latest`` is a small text file naming its newest checkpoint folder: the
    folder it names (when it exists), so a user can pass the pointer itself; any other path unchanged."""
    path = Path(path)
    if path.name == "latest" and path.is_file() and path.stat().st_size < 256:
        name = path.read_text(encoding="utf-8", errors="replace").strip()
        # a folder beside it, by name: an empty or "." pointer (a torn write) named the checkpoints folder
        if name and name not in (".", "..") and "/" not in name and (pointer_folder(path) / name).is_dir():
            return saved_after(pointer_folder(path) / name)
    return path


def save_ids(folder: Path) -> tuple[str | None, str | None]:
    """A trainer's checkpoint folder's (save_id, follows): its own id and that of the checkpoint its run continued
    from, as CheckpointManager.save records them in config.json; (None, None) for one without (older, or not a
    step folder)."""
    try:
        extra = json.loads((folder / "config.json").read_text(encoding="utf-8"))[FORMAT_KEY].get("extra") or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, None
    return extra.get("save_id"), extra.get("follows")


def saved_after(folder: Path) -> Path:
    """``folder`` (a ``step_N`` that ``latest`` names), or the checkpoint its run saved after it: a kill between
    that one's swap-in and the `latest` that names it left `latest` a save behind, and `--resume latest` redid the
    steps in between and filed their records as an abandoned branch. Told apart from a branch's later folders
    (an earlier resume's) by the id each save records of the one it follows."""
    if not (folder.name.startswith("step_") and folder.name[5:].isdigit()):
        return folder
    own = save_ids(folder)[0]
    step = int(folder.name[5:])
    later = sorted((p for p in folder.parent.glob("step_*") if p.name[5:].isdigit() and int(p.name[5:]) > step),
                   key=lambda p: int(p.name[5:]))
    for candidate in later if own is not None else ():
        saved, follows = save_ids(candidate)
        if saved is not None and follows == own:
            folder, own = candidate, saved
    return folder


def pointer_folder(pointer: Path) -> Path:
    """The folder a ``latest`` pointer's name is read in: the real file's, where the pointer is reached through a
    link (models/latest -> run/checkpoints/latest named step_N beside the link: none, or another run's)."""
    return Path(os.path.realpath(pointer)).parent if pointer.is_symlink() else pointer.parent


@float32_default()  # (a host's float64 default gave a float64 model, and save_model wrote it so)
def load_model(
    path: str | Path, image_size: int | None = None, allow_jit: bool = False, map_location: str = "cpu",
    act: str | None = None,
) -> nn.Module:
    """Load a kizuna, OpenAI or Hugging Face checkpoint; the format is detected from the files.

    ``image_size`` rebuilds the model at another resolution, resampling its position embeddings.
    ``act`` ("gelu", "quick_gelu", "gelu_tanh"): the activation of an OpenAI-layout state dict, which the
    layout cannot record. OpenAI's own checkpoints use QuickGELU, the default; most OpenCLIP (LAION)
    checkpoints use GELU and need ``act="gelu"``. kizuna and Hugging Face checkpoints record theirs.
    """
    given = Path(path).expanduser()  # (save_model writes "~/m" under the home folder)
    for attempt in range(LATEST_READS):
        path = follow_latest(given)
        try:
            return _load_model(path, image_size, allow_jit, map_location, act)
        except (CheckpointError, FileNotFoundError):
            # `latest` of a run still training: the folder it named was pruned while it was read (a "not a readable
            # safetensors file", "no config.json" for a healthy run: its files go before the folder), or it named
            # one already gone; read again from what `latest` names now. Still the folder it names: damaged (a run
            # prunes only folders `latest` no longer names)
            if given.name != "latest" or not given.is_file() or attempt == LATEST_READS - 1:
                raise
            if path != given and follow_latest(given) == path:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


# reads of a run's `latest` while the run saves and prunes (each a few milliseconds apart)
LATEST_READS = 4


def _load_model(path: Path, image_size, allow_jit: bool, map_location: str, act) -> nn.Module:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.name == "latest" and path.is_file() and path.stat().st_size < 256:  # a pointer naming no folder
        _refuse_dangling_latest(path)
    image_size = python_int(image_size)  # (a numpy int was refused as no int)
    if image_size is not None and not _is_image_size(image_size):  # before the try below blames the checkpoint
        raise ValueError(f"image_size must be a positive int or two (height, width), got {image_size!r}")
    if act is not None and path.is_dir():  # a .safetensors file is told apart once read, below
        _refuse_act(path)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            inside = [p for p in (path / "model", path / "checkpoints" / "best", path / "checkpoints" / "latest")
                      if p.exists()]
            if inside or (path / "train_config.json").is_file():  # a run's --out, the commonest slip
                raise CheckpointError(f"{path} is a training run's folder, not a model; pass "
                                      + (" or ".join(str(p) for p in inside) or f"{path / 'checkpoints' / 'latest'}"))
            inside = [p for p in (path / "best", path / "latest") if p.exists()]
            if inside:  # the run's checkpoints/ folder: its models are the folders inside
                raise CheckpointError(f"{path} is a training run's checkpoints folder, not a model; pass "
                                      + " or ".join(str(p) for p in inside))
            if _carries_a_record(path / "model.safetensors"):  # a save into the folder cut before its config
                raise CheckpointError(f"{path}: folder has no config.json, but its model.safetensors carries kizuna's "
                                      "record (a save interrupted before its config.json?): load that file, "
                                      f"{path / 'model.safetensors'}, which loads as it is")
            raise CheckpointError(f"{path}: folder has no config.json (expected a kizuna or Hugging Face model)")
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # the last: nested too deep
            raise CheckpointError(f"{cfg_file}: invalid JSON ({e})") from None
        except OSError as e:  # a folder named config.json, no permission, an I/O error
            raise CheckpointError(f"{cfg_file}: cannot be read ({type(e).__name__}: {e.strerror or e})") from None
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{cfg_file}: expected a JSON object, got {type(cfg).__name__}")
        if FORMAT_KEY in cfg:
            record = cfg[FORMAT_KEY]
            meta, tensors = _read_safetensors(path / "model.safetensors")
            record = _record_of_the_weights(path, record, meta)
        else:
            from .convert_hf import hf_folder_to_kizuna

            record, tensors = hf_folder_to_kizuna(path)
    elif path.suffix == ".safetensors" and FORMAT_KEY in (contents := _read_safetensors(path))[0]:
        meta, tensors = contents
        if act is not None:
            _refuse_act(path)
        try:
            record = json.loads(meta[FORMAT_KEY])
        except (json.JSONDecodeError, RecursionError) as e:  # the last: nested too deep
            raise CheckpointError(f"{path}: its kizuna metadata is not valid JSON ({e})") from None
    else:
        from .convert_openai import openai_to_kizuna

        if path.suffix == ".safetensors":
            # No kizuna metadata: OpenCLIP's hub repos ship the OpenAI-layout state dict of their .pt files as
            # open_clip_model.safetensors, read as the .pt is; anything else is said for what it looks like.
            jit, state_dict = False, _foreign_safetensors(path, contents[1])
        else:
            jit, state_dict = _is_torchscript(path), _load_torch_file(path, allow_jit)
        record, tensors = openai_to_kizuna(state_dict, source=str(path), act=act or "quick_gelu")
        if act is None and not jit:
            # OpenAI ships TorchScript archives (QuickGELU, right); a plain state dict in this layout is
            # usually OpenCLIP's, and most OpenCLIP (LAION) models use GELU, which the layout cannot say.
            import warnings

            warnings.warn(f"{path}: an OpenAI-layout state dict records no activation; QuickGELU (OpenAI's) is "
                          "assumed. For an OpenCLIP checkpoint trained with GELU (most LAION ones; not the "
                          "'-quickgelu' models) pass act=\"gelu\" (kizuna.create_model(path, act=\"gelu\"); on the "
                          "command line --act gelu; in an eval suite, the run's \"act\": \"gelu\")", UserWarning,
                          stacklevel=2)
    try:
        if image_size is not None:
            record, tensors = _change_resolution(record, tensors, image_size)
        check_depth_fits(record, len(tensors), str(path))
        # Every tensor comes from the checkpoint, so skip the random init (seconds for a ViT-B): build on the
        # meta device, allocate uninitialised memory, then copy.
        with torch.device("meta"):
            model = model_from_record(record)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except _ImageSizeError as e:
        raise ValueError(f"{path}: {e}") from None
    except MissingExtra:  # a MiniLM model without transformers: the package to install, not "another version"
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as e:  # a record from another version, or damaged
        raise CheckpointError(f"{path}: its kizuna record does not describe a model this kizuna builds "
                              f"({type(e).__name__}: {e}); it may come from another kizuna version") from None
    # The tensors must fit before the model is allocated: the config alone sets its size, and one edited to
    # absurd sizes (a width of 131072) tried to allocate hundreds of GB, or took 30 s and GBs on the slow
    # path below, before the mismatch was seen. The HF path checked on the meta device already; this is cheap.
    tensors = fitting_state_dict(model, tensors, str(path))
    if any(m._non_persistent_buffers_set for m in model.modules()):
        # Such buffers (e.g. BERT's position_ids in the MiniLM tower) are not in the checkpoint, so
        # they need their real initial values: build the slow way (the record built on meta above).
        model = model_from_record(record)
    else:
        model = model.to_empty(device="cpu")
    model.load_state_dict(tensors, strict=True)
    stored = (record.get("extra") or {}).get("preprocess") if isinstance(record, dict) else None
    if isinstance(stored, dict) and isinstance(model, VisionTransformer):
        # A supervised ViT's preprocessing is kept beside its weights, not in its config (a fine-tuned CLIP tower
        # has OpenAI's mean/std): carried on the model, so kizuna.get_preprocess(model) and evaluate_classifier
        # use it (they used 0.5/0.5 and scored such a model otherwise than `kizuna vit eval` does)
        model.preprocess_config = {**stored, "image_size": model.cfg.image_size}
    return model.to(map_location).eval()


def check_depth_fits(record, tensor_count: int, source: str) -> None:
    """Refuse a config whose blocks (its towers' ``depth``, a hybrid stem's ``stem_channels``) outnumber the
    checkpoint's tensors, each block having at least one, before the model is built: building is linear in depth
    even on the meta device, and a depth edited to 10^6 ran for half an hour and tens of GB before the mismatch was
    seen (the width check, fitting_state_dict, comes after the build)."""
    def blocks(node) -> int:
        if isinstance(node, dict):
            depth = node.get("depth")
            own = depth if isinstance(depth, int) and not isinstance(depth, bool) else 0
            stem = node.get("stem_channels") if node.get("stem") not in (None, "patch") else None
            own += len(stem) if isinstance(stem, list) else 0
            return own + sum(blocks(v) for v in node.values() if isinstance(v, dict))
        return 0

    count = blocks(record.get("config") if isinstance(record, dict) else None)
    if count > tensor_count:
        raise CheckpointError(f"{source}: checkpoint does not fit the model: its config describes {count} blocks "
                              f"(depth) but the checkpoint holds {tensor_count} tensors, fewer than one a block: the "
                              "config was edited or belongs to another model")


def _refuse_act(path: Path) -> None:
    raise ValueError(f"{path}: --act (act=) applies to OpenAI-layout state dicts (.pt/.bin, or a .safetensors "
                     "file without kizuna metadata) only; a kizuna or Hugging Face checkpoint records its own "
                     "activation")


def _foreign_safetensors(path: Path, tensors: dict) -> dict:
    """The tensors of a .safetensors file without kizuna metadata when they are in the OpenAI layout (which
    openai_to_kizuna then reads, or refuses naming what is missing); else a CheckpointError saying what the
    file looks like. "Save it with kizuna.save_model" was the only advice, which needs the model loaded."""
    names = {k[len("module."):] if k.startswith("module.") else k for k in tensors}
    if "text_projection" in names and any(k.startswith("visual.") for k in names):
        return tensors
    if any(k.startswith(("vision_model.", "text_model.")) for k in names):
        raise CheckpointError(f"{path}: the weights of a Hugging Face CLIP/SigLIP model (no config of their own); "
                              "pass the folder that holds them with its config.json")
    if any(k.startswith(("visual.patch_embed.", "text.token_embed.", "patch_embed.")) for k in names):
        raise CheckpointError(f"{path}: a kizuna state dict without kizuna metadata (the config that says what "
                              "model to build): load it into the model it came from (kizuna.create_model with that "
                              "config, then load_state_dict) and save that with kizuna.save_model")
    shown = ", ".join(sorted(names)[:6]) or "nothing"
    raise CheckpointError(f"{path}: a safetensors file without kizuna metadata, and not an OpenAI/OpenCLIP-layout "
                          f"state dict (found {shown}{', ...' if len(names) > 6 else ''}); a model is a kizuna "
                          ".safetensors file or folder, an OpenAI/OpenCLIP state dict or a Hugging Face folder")


class _ImageSizeError(ValueError):
    """load_model's image_size does not fit the model: the caller's mistake, not the checkpoint's."""


def _is_image_size(size) -> bool:
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return all(_is_image_size(s) for s in size)
    return isinstance(size, int) and not isinstance(size, bool) and size > 0


def _refuse_dangling_latest(pointer: Path) -> None:
    """A ``checkpoints/latest`` pointer naming no checkpoint folder (deleted, moved, a torn write): said, rather
    than read as a weights file (it was: "cannot be read as a weights-only torch file (IndexError: ...)")."""
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    folder = pointer_folder(pointer)
    steps = sorted((p for p in folder.glob("step_*") if p.is_dir() and p.name[5:].isdigit()),
                   key=lambda p: int(p.name[5:]))
    there = (f"the newest checkpoint beside it is {steps[-1].name}: pass {steps[-1]}" if steps
             else f"{folder} holds no step_* checkpoint folder: pass another checkpoint")
    raise CheckpointError(f"{pointer}: a 'latest' pointer naming {name!r}, which is not a checkpoint folder beside it "
                          f"(removed or moved?); {there}")


def _change_resolution(record: dict, tensors: dict, image_size: int) -> tuple[dict, dict]:
    """Rebuild the config at ``image_size`` and resample the stored position embeddings to match."""
    record = json.loads(json.dumps(record))
    vcfg = record["config"]["vision"] if record["kind"] == "clip" else record["config"]
    with grid_warning_silenced():  # the model built from the record says it, once
        old = VisionConfig(**vcfg)
        vcfg["image_size"] = image_size
        try:
            new = VisionConfig(**vcfg)
        except ValueError as e:
            raise _ImageSizeError(f"image_size={image_size!r} does not fit this model: {e}") from None
        map_grid = tuple(m // new.patch_size for m in new.stem_map)
        if new.stem == "resnet" and map_grid != new.grid and _pair(new.image_size) != _pair(old.image_size):
            # the stem's map rounds up where the grid rounds down: the trained table was resampled to the grid, then
            # back to the map on every forward (up to 70% of its largest value changed), and saved so by a fine-tune
            stride = new.patch_size * new.stem_stride
            raise _ImageSizeError(f"image_size={image_size!r} is not a multiple of this hybrid's stride {stride}: "
                                  f"its ResNet stem gives a {map_grid[0]}x{map_grid[1]} grid there, its position "
                                  f"embeddings a {new.grid[0]}x{new.grid[1]} one, which would be resampled down and "
                                  f"back up on every forward; use a multiple of {stride}")
    if record["kind"] == "clip":
        record["config"]["preprocess"]["image_size"] = image_size
    key = "visual.pos_embed" if record["kind"] == "clip" else "pos_embed"
    tensors = dict(tensors)
    tensors[key] = resample_pos_embed(tensors[key], new.grid, old.grid, old.num_prefix_tokens)
    return record, tensors
