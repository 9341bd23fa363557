"""Helpers shared by the command-line tools."""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys

import numpy as np
import torch


def json_safe(x):
    """A JSON-writable copy of ``x``: tensors and numpy values to Python numbers and lists, paths to strings, dict
    keys to strings, NaN/inf to None (strict JSON has no NaN, e.g. the recall of a class with no images)."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return json_safe(x.tolist() if isinstance(x, np.ndarray) else x.detach().cpu().tolist())
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):  # (json.dumps refused it: "Object of type bool is not JSON serializable")
        return bool(x)
    if isinstance(x, os.PathLike):  # save_model(extra={"data": Path(...)}) failed deep in json, naming no key
        return os.fspath(x)
    return x


def device_name(text: str) -> str:
    """``--device``: a torch device this machine has (argparse turns the error into a one-line message). "auto",
    the training commands' default, is the GPU where there is one (it was "'auto' is not a device" here)."""
    import argparse

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:0, ...)") from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta ...: accepted here, then a traceback from .to(device)
        raise argparse.ArgumentTypeError(f"{text!r}: kizuna runs on cpu or cuda (cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA GPU here (torch {torch.__version__}); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return text


def add_device_argument(parser) -> None:
    """``--device``, the GPU where there is one: the same default on every command that loads a model."""
    parser.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda where there is a GPU, else cpu)")


def add_act_argument(parser) -> None:
    parser.add_argument("--act", choices=("quick_gelu", "gelu"), default=None,
                        help="the activation of an OpenAI-layout .pt/.bin/.safetensors, which the layout does not record: gelu "
                             "for most OpenCLIP checkpoints (default: quick_gelu, OpenAI's own, with a warning "
                             "for a plain state dict)")


def add_model_argument(parser, required: bool = True):
    parser.add_argument("--model", required=required, type=model_spec,
                        help="checkpoint path (kizuna folder/.safetensors, OpenAI .pt, HF folder) or preset name")
    parser.add_argument("--allow-jit", action="store_true",
                        help="allow loading TorchScript archives (they execute code: trusted files only)")
    add_threads_argument(parser)
    add_act_argument(parser)
    add_device_argument(parser)
    from kizuna import PRECISIONS

    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                        help="weights and activations: fp32 (default), or bf16 - on a CPU with AMX (recent Intel Xeons) "
                             "images encode ~4x and texts ~2.5x faster, with AVX-512 BF16 (AMD Zen 4) ~1.8x, features "
                             "within a cosine of ~0.9999 of fp32's; on CPUs with neither bf16 is slower than fp32")


# room an --out needs below the path limit for what the commands write inside it
PATH_ROOM = 160


def check_writable(out, folder_for: str | None = None) -> None:
    """``--out`` before the work, not after it: a file where a folder belongs (``folder_for`` says what the
    folder is for), or a place that cannot be written (a read-only mount), failed once the evaluation or figures
    were done, as "[Errno 17] File exists" or a traceback."""
    import os
    from pathlib import Path

    out = Path(os.path.expanduser(str(out)))
    try:
        if folder_for and out.is_file():
            raise ValueError(f"--out {out} is a file; give a folder for {folder_for}")
        folder = out if folder_for else out.parent
        while not folder.exists() and folder != folder.parent:
            if os.path.islink(folder):  # a link to nothing (or a loop of links) "does not exist" either: the
                # check passed and the write failed after the work as "[Errno 17] File exists"
                raise ValueError(f"--out {out}: {folder} is a symbolic link to {os.readlink(folder)}, which does "
                                 "not exist (or loops); create its target, or choose another --out")
            folder = folder.parent
    except OSError as e:  # a name longer than the file system takes (ENAMETOOLONG): a traceback before
        raise ValueError(f"--out {out}: {e.strerror or e}; choose another --out") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: cannot write in {folder}; choose another --out")
    if getattr(os, "geteuid", lambda: -1)() == 0:  # root: access() says yes to every folder, and /proc/x failed
        # after the work as a bare "[Errno 2] No such file or directory"; a folder made and removed says for sure
        import tempfile

        try:
            os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".kizuna-probe-"))
        except OSError as e:
            raise PermissionError(f"--out {out}: cannot write in {folder} ({e.strerror or e}); choose another "
                                  "--out") from None
    # the files written inside it (checkpoints/.step_0000001.XXXXXXXX/model.safetensors, figures' temp names) need
    # room below the path limit: a folder a little under it passed, and every write failed after the work
    try:
        limit = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return
    length = len(os.fsencode(os.path.abspath(out)))
    # a file --out (embed's .npy) needs room for its temp name beside it only
    if limit > 0 and length + (PATH_ROOM if folder_for else 20) > limit:
        raise ValueError(f"--out {out} is {length} bytes long, and the files written "
                         f"{'inside it' if folder_for else 'for it'} would pass the file system's {limit}-byte path "
                         "limit; choose a shorter --out")


def _real_path(path):
    """``path`` with "~", "..", and symlinks resolved: the overlap checks below compare real paths (a symlink, "..",
    or "~" on one side only hid the overlap)."""
    import os
    from pathlib import Path

    return Path(os.path.realpath(os.path.expanduser(str(path))))


def parts_below(path, folder) -> tuple[str, ...] | None:
    """The parts of ``path`` below ``folder`` (``()`` for the folder itself), or None where it is not inside it.
    Real paths (:func:`_real_path`) compared by the file system's identity where both exist: on a case-insensitive
    one (macOS, Windows) `base` and `Base` are one folder, and comparing the text let `vit finetune base/model
    --out Base` replace its own starting model; by text where either is missing."""
    path, folder = _real_path(path), _real_path(folder)
    for up in (path, *path.parents):
        if up == folder or same_place(up, folder):
            return path.parts[len(up.parts):]
    return None


def same_place(a, b) -> bool:
    """Both exist and are one file or folder (by the file system's identity: `Runs/x` and `runs/x` on macOS)."""
    import os

    try:
        return os.path.samefile(a, b)
    except (OSError, RuntimeError, ValueError):  # one missing, a loop of links, a path too long: not the same
        return False


def check_start_outside_out(out, flag: str, model) -> None:
    """The model a run starts from (``flag``: how the user named it, "--model", "the checkpoint to fine-tune")
    neither ``out`` itself nor inside what a run there moves or writes (OUT/checkpoints*, OUT/model*). A run there
    sets ``out``'s checkpoints aside and writes ``out``/model at its end: `vit finetune base/model --out base`
    replaced its own starting model, and a second one (a retry with another --lr) set the first's checkpoints aside
    over ``checkpoints.prev``, which held the original run: no copy of the starting model was left. A preset name
    (not a path here) is fine."""
    import os

    if not out or not str(out).strip() or not model or not os.path.exists(os.path.expanduser(str(model))):
        return
    below = parts_below(model, out)
    # where a run moves or writes: OUT/checkpoints* and OUT/model* (a model elsewhere in OUT, e.g. OUT/pretrained,
    # is left alone by the run and fine)
    if below is not None and (not below or below[0].casefold().startswith(("checkpoints", "model"))):  # (Model is
        # model on macOS)
        raise ValueError(f"the model to start from ({flag}: {model}) is inside --out {out}: a run there sets that "
                         "folder's checkpoints aside and writes its own model there, over the one it started from "
                         "(a second run deletes the first's set-aside copy); choose another --out (e.g. a new "
                         "folder beside it)")


def check_out_outside_data(out, flag: str, data, out_flag: str = "--out") -> None:
    """``--out`` neither a folder given as data (``flag``: "--dataset", "--images", ...; ``data`` one path or a
    list) nor inside one. What a command wrote there was read back as data by the next run: `eval zeroshot
    --dataset d --out d/ev` found a class "ev" (its own confusion PNG), `analyze --images d --out d/fig` measured
    its figure, and a `vit train --data d --out d` resumed on model/, checkpoints/ and tensorboard/ as classes.
    An --out that holds the data (d inside --out) is fine. Only a local folder is checked: a file, a CSV or a shard
    spec ("dir/{000000..000009}.tar" names its shards) reads nothing it did not name. ``out_flag`` names the
    folder checked (``--cache-dir``: its classes-*.pt cache in an ImageFolder was a class "cache" of the next run,
    every image predicted as it); a hidden folder on the way (d/.cache) is never read as data."""
    import os

    if not out or not str(out).strip():
        return
    for given in ([data] if isinstance(data, (str, os.PathLike)) else list(data or ())):
        # os.path.isdir: a `::` list of shards is one long string, which Path.is_dir raised on (ENAMETOOLONG)
        if not given or not str(given).strip() or not os.path.isdir(os.path.expanduser(str(given))):
            continue
        below = parts_below(out, given)
        if below is not None:
            if any(part.startswith(".") for part in below):
                continue
            where = f"is {flag} {given} itself" if not below else f"is inside {flag} {given}"
            raise ValueError(f"{out_flag} {out} {where}: what is written there would be read back as data "
                             f"by the next run (a new class folder, extra images); choose another {out_flag}, "
                             f"outside {given}")


def add_threads_argument(parser) -> None:
    """``--threads N``: torch's CPU threads for this command (the training commands and `vit eval` had it; on a
    shared machine the others took every core). Applied by ``kizuna.apps.cli.main``."""
    parser.add_argument("--threads", type=at_least_zero, default=0, help="torch CPU threads (default 0: torch's "
                        "choice: OMP_NUM_THREADS if set, else every core)")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or `taskset`'s share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (macOS, Windows)
        return os.cpu_count() or 1


def warn_if_threads_past_the_cores(threads: int) -> None:
    """``--threads`` above the cores this process may use: the threads take turns on the cores, and each step (or
    matmul) waits for the slowest; it was accepted without a word (`--threads 64` on 2 cores)."""
    cores = usable_cores()
    if isinstance(threads, int) and threads > cores:
        import warnings

        warnings.warn(f"--threads {threads} is more than the {cores} CPU core(s) this process may use: the extra "
                      "threads contend for them and slow every step; --threads 0 takes torch's choice",
                      UserWarning, stacklevel=3)


def refuse_under_torchrun(command: str) -> None:
    """A command that runs in one process (its work is not split over ranks) refused under torchrun, in one line:
    every rank did all the work and wrote the same files (`kizuna embed`: N times the compute, two renames racing
    onto one output), and `analyze` had one rank refuse its sibling's folder lock as "another kizuna run"."""
    from kizuna.train.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise ValueError(f"{command} runs in one process (its work is not split over ranks): run it without "
                         "torchrun")


def add_loader_timeout_argument(parser) -> None:
    """``--loader-timeout-minutes``: how long the command waits for a batch from its decoding workers before it
    ends with one line (a worker hung on one file, a network file system that stopped answering, waited for ever),
    as the training commands' flag of the name says. Applied by ``kizuna.apps.cli.main``."""
    from kizuna.data.loader import LOADER_TIMEOUT_MINUTES

    def minutes(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value >= 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"a number of minutes >= 0 (0 = wait for ever), not {text!r}")
        return value

    parser.add_argument("--loader-timeout-minutes", type=minutes, default=LOADER_TIMEOUT_MINUTES, metavar="M",
                        help="end the command when its decoding workers give no batch for M minutes: a worker "
                        f"hung on one file (default {LOADER_TIMEOUT_MINUTES:g}; 0 = wait for ever)")


def progress_default() -> bool:
    """Whether a command draws progress bars when no flag says: only where stderr is a terminal. Redirected to a
    file (a batch job's log) a bar is no bar but thousands of carriage-return redraws and cursor moves, and the
    training commands' per-step lines (printed only without a bar) were missing from the log. An explicit
    ``--progress true`` still draws them anywhere. One rule for every command that takes --progress."""
    try:
        if not sys.stderr.isatty():
            return False
    except (AttributeError, ValueError, OSError):  # None (a closed stderr), a closed file, a stream without one
        return False
    # a terminal of 0 rows (`script` without one, some container consoles): tqdm hides every bar past the screen's
    # height, and no step lines were printed instead, so nothing showed the run going
    try:
        return os.get_terminal_size(sys.stderr.fileno()).lines > 0
    except (AttributeError, ValueError, OSError):  # a size that cannot be read: a terminal all the same
        return True


def add_progress_argument(parser, help: str = "no progress bar") -> None:
    """``--no-progress``, and the training commands' spelling ``--progress true|false`` (both set
    ``args.no_progress``): a user who learnt one on `kizuna train` got "unrecognized arguments" here. Given
    neither, the bars are drawn where stderr is a terminal (:func:`progress_default`)."""
    from kizuna.train.config import parse_flag_value

    parser.add_argument("--no-progress", action="store_true", default=not progress_default(),
                        help=help + " (default: bars only when stderr is a terminal)")
    # nargs="?": a bare --progress is true, as on the training commands (here it was "expected one argument")
    parser.add_argument("--progress", dest="no_progress", metavar="BOOL", nargs="?", const=False,
                        type=lambda s: not parse_flag_value(bool, s),
                        help="true|false: the same as --no-progress when false (the training commands' "
                        "spelling)").switch = True  # (alone before a positional: switches_given_alone)


def switches_given_alone(parser, argv: list[str]) -> list[str]:
    """``argv`` with each switch given alone before a command's positional argument spelt ``--switch=true``:
    argparse takes the word after an optional value as the value, so ``vit finetune --compile MODEL ...`` was
    refused as "argument --compile: expected true/false, got 'MODEL'". Only in commands that take a positional,
    and only before a word that is neither a switch word nor one mistyped (``--compile ture`` is still said)."""
    import argparse

    command, start = parser, 0
    for k, word in enumerate(argv):  # the subcommand's parser: each word naming one of the current parser's
        sub = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)  # subcommands
        if sub is not None and word in sub.choices:
            command, start = sub.choices[word], k + 1
    if not any(not a.option_strings and not isinstance(a, argparse._SubParsersAction) for a in command._actions):
        return argv
    switches = {flag for a in command._actions if getattr(a, "switch", False) for flag in a.option_strings}
    alone = [i for i, word in enumerate(argv[:-1]) if word in switches and "--" not in argv[:i]
             and not argv[i + 1].startswith("-") and not _switch_word_or_typo(argv[i + 1])]
    # ... and only while the words left over fit the positionals: `vit eval MODEL --progress disabled` and
    # `vit finetune --compile disabled MODEL` are a bad value (read as a switch alone, the value was "unrecognized
    # arguments: disabled", or took MODEL's place and MODEL was unrecognized)
    if alone and _free_words(command, argv[start:]) > _positional_slots(command):
        return argv
    out = list(argv)
    for i in alone:
        out[i] = f"{argv[i]}=true"
    return out


def _positional_slots(command) -> float:
    import argparse

    slots = 0.0
    for a in command._actions:
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction):
            slots += float("inf") if a.nargs in ("*", "+", argparse.REMAINDER) else (a.nargs if isinstance(a.nargs, int)
                                                                                   else 1)
    return slots


def _free_words(command, words: list[str]) -> int:
    """The words of a subcommand's ``words`` that no option takes (a switch's next word counted free)."""
    takes = {flag: a for a in command._actions for flag in a.option_strings}
    free, i = 0, 0
    while i < len(words):
        word = words[i]
        if word == "--":
            return free + len(words) - i - 1
        if word.startswith("-") and len(word) > 1:
            action = takes.get(word.split("=", 1)[0])
            if action is not None and "=" not in word and not getattr(action, "switch", False) and action.nargs != 0:
                if action.nargs in ("+", "*", "?"):  # as argparse: every word up to the next option (--images a b)
                    i += 1
                    while i < len(words) and not (words[i].startswith("-") and len(words[i]) > 1):
                        i += 1
                else:
                    i += 1 + (action.nargs if isinstance(action.nargs, int) else 1)  # (its value, or values)
                continue
        else:
            free += 1
        i += 1
    return free


def _switch_word_or_typo(word: str) -> bool:
    """``word`` is a switch's value (true, off, ...) or one mistyped (ture, flase): not a path (a "." or "/" in
    it), and close to a switch word (a positional "note" or "ones" was refused as a mistyped "no" or "on")."""
    import difflib

    from kizuna.models.layers import SWITCH_WORDS

    w = word.lower()
    return w in SWITCH_WORDS or (not any(c in w for c in "./\\") and len(w) >= 3
                                 and bool(difflib.get_close_matches(w, list(SWITCH_WORDS), cutoff=0.75)))


def whole_number(minimum: int):
    """An argparse type: a whole number >= ``minimum``; too small was taken as given (a count of 0 emptied a
    grid, or silently meant "the default")."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"at_least_{minimum}"
    return parse


def folder_path(text: str) -> str:
    """An argparse type for a folder to write (--out, --cache-dir): "" or blanks (an unset shell variable) are
    refused. The eval commands read "" as no --out (the results went unwritten, rc 0) and analyze and the class
    cache as the current folder."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("empty (an unset variable?): give a folder, or leave the flag out")
    return text


def model_spec(text: str) -> str:
    """An argparse type for a model argument: "" (an unset shell variable) is refused; as a path it is the
    current folder, and a command loaded whatever was there."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a preset name or a checkpoint path")
    return text


at_least_one = whole_number(1)  # counts: images, draws, classes in a panel
at_least_zero = whole_number(0)  # --threads (0: torch's choice)


def load_model_from_args(args):
    from kizuna.train.optim import announce_precision

    announce_precision(getattr(args, "precision", "fp32"), torch.device(args.device))
    model = create_model_for_command(args.model, allow_jit=getattr(args, "allow_jit", False),
                                     precision=getattr(args, "precision", "fp32"), act=getattr(args, "act", None))
    return checked_clip_model(model, args.model).to(args.device).eval()


def is_preset_spec(spec: str) -> bool:
    """Whether ``create_model(spec)`` builds a preset's random weights (a name, or a folder that only shadows one)."""
    from pathlib import Path

    import kizuna

    return not Path(str(spec)).exists() or kizuna._shadows_a_preset(str(spec))


def names_a_preset(spec) -> bool:
    """Whether ``spec`` is a preset's name (not an existing path, or a folder that only shadows the name); unlike
    :func:`is_preset_spec`, a missing path (a .pt with a typo) is not one."""
    from pathlib import Path

    import kizuna

    spec = str(spec)
    return (spec.replace("/", "-") in kizuna.list_models() and not Path(spec).exists()) or kizuna._shadows_a_preset(spec)


def refuse_act_for_a_preset(spec: str, act: str | None) -> None:
    """--act is for an OpenAI-layout file (the layout does not record its activation): beside a preset's name it
    rebuilt the preset with another one (`zeroshot --model ViT-B-32-quickgelu --act gelu`), without a word, where
    `kizuna train` refuses it. (A missing .pt is no preset: told to drop --act, the user met "not found" next.)"""
    if act and names_a_preset(spec):
        raise ValueError(f"--act {act}: --act names the activation of an OpenAI-layout checkpoint given as --model; "
                         f"a preset's ({spec}) is its own (QuickGELU for the -quickgelu presets, else GELU): drop it")


def create_model_for_command(spec: str, **kwargs):
    """``kizuna.create_model`` for a command: a preset's random weights are drawn from seed 0, so that two runs of
    one command give the same numbers (two `eval --model ViT-mu-8` differed), without touching the caller's RNG."""
    import kizuna

    if not is_preset_spec(spec):
        return kizuna.create_model(spec, **kwargs)
    refuse_act_for_a_preset(spec, kwargs.get("act"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return kizuna.create_model(spec, **kwargs)


def checked_clip_model(model, spec: str, *, is_main: bool = True):
    """``model`` when it is an image-text model. A supervised ViT (no text tower) failed deep inside with an
    AttributeError or a page-long module dump; a preset name builds untrained weights, which classify with
    confident-looking nonsense, so that is said (once, from the main process)."""
    import kizuna

    if not isinstance(model, kizuna.ClipModel):
        raise ValueError(f"{spec} is a {type(model).__name__}: an image classifier without a text tower. This "
                         f"command needs an image-text (CLIP/SigLIP) model; evaluate a ViT with "
                         f"`kizuna vit eval {shlex.quote(str(spec))} --data ...`")
    # create_model's own rule: a folder that only shadows a preset's name (an earlier `--out ViT-B-32`) still
    # builds the preset, and Path(spec).exists() alone dropped the note for those random weights
    if is_preset_spec(spec) and is_main:
        print(f"note: {spec} is a preset name: its weights are random (seeded, the same every run; kizuna "
              "downloads nothing); pass a trained "
              "checkpoint (a folder, .safetensors, OpenAI .pt or Hugging Face folder) for meaningful results",
              file=sys.stderr)
    return model


def display_width(text: str) -> int:
    """The columns ``text`` takes in a terminal: wide (CJK) and fullwidth characters and emoji two, combining marks
    and zero-width characters none (len() counted 日本 as 2 and shifted its row's columns)."""
    import unicodedata

    width = 0
    for c in text:
        if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return width


# what Python's str.splitlines breaks lines at (readers that split so saw two rows for one name)
_LINE_BREAKS = str.maketrans({c: c.encode("unicode_escape").decode("ascii")
                              for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})
# and the other control characters but the tab, where a name is shown (a message, a table): ESC and the C1 codes from
# a data file's class name or shard member name drove the terminal they were printed to (ESC]0;...BEL set its title;
# others move the cursor, rewrite the screen, make links)
_CONTROLS = str.maketrans({c: c.encode("unicode_escape").decode("ascii")
                           for c in [*map(chr, range(0x20)), *map(chr, range(0x7f, 0xa0)), "\u2028", "\u2029"]
                           if c != "\t"})


def one_line(name: str) -> str:
    """``name`` as one line of a file (the .txt beside a .npy): its line breaks as escapes (a\\nb.png), nothing
    else changed, so rows map back to the texts. A space in their place named three files, "a b.png" and the other
    two, alike: rows mapped back by name went to the wrong file."""
    return name.translate(_LINE_BREAKS) if not name.isprintable() else name


def shown_line(name: str) -> str:
    """``name`` as one line to show (a message, a table): line breaks and other control characters as escapes."""
    return name.translate(_CONTROLS) if not name.isprintable() else name


def table_cell(value) -> str:
    """``value`` as one line of one cell: its line breaks and tabs as escapes (a class named "new\\nline" split its
    row in two, a tab shifted it), as the .txt of `kizuna embed` writes them."""
    return shown_line(str(value)).replace("\t", "\\t")


def format_table(rows: list[list], headers: list[str]) -> str:
    cells = [[table_cell(c) for c in r] for r in rows]
    headers = [table_cell(h) for h in headers]
    widths = [max(display_width(h), *(display_width(r[i]) for r in cells)) if cells else display_width(h)
              for i, h in enumerate(headers)]

    def pad(text: str, width: int, left: bool) -> str:
        room = " " * max(0, width - display_width(text))
        return text + room if left else room + text

    line = lambda r: "  ".join(pad(c, w, i == 0) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in cells)])


def home_path(value):
    """``~`` and ``~/...`` as the home folder, as a shell expands them at the start of a word: after ``=``
    (``--out=~/run``), in quotes or in a config file it does not, and the data flags expanded them while --out made a
    folder named ``~`` in the working directory (which ``rm -rf ~`` then tidies away with the home folder) and
    --model/--resume failed on a path that exists. Other strings (``~cat``, a label) are left as they are."""
    if isinstance(value, str) and (value == "~" or value.startswith("~/")):
        return os.path.expanduser(value)
    if isinstance(value, list):
        return [home_path(v) for v in value]
    return value
