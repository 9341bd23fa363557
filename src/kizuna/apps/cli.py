"""The `kizuna` command line.

Each subcommand lives in its own module with two functions, ``add_arguments(parser)`` and
``run(args)``; this file only wires them up and turns expected errors into one clear line.
"""
from __future__ import annotations

import argparse
import codecs
import importlib
import os
import re
import sys
import threading

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS = {
    "info": ("kizuna.apps.info", "print a model's config, parameter count and FLOPs"),
    "zeroshot": ("kizuna.apps.zeroshot", "classify images against free-text labels"),
    "embed": ("kizuna.apps.embed", "write embeddings of a folder of images or a text file"),
    "train": ("kizuna.train.cli", "train a CLIP/SigLIP model (contrastive)"),
    "demo": ("kizuna.train.demo", "train a small CLIP on the built-in shapes world and report (CPU, minutes)"),
    "eval": ("kizuna.eval.cli", "evaluate: zero-shot, retrieval, linear probe, few-shot, probes, suites"),
    "vit": ("kizuna.train.vit_cli", "supervised ViT: train, fine-tune, evaluate, show the augmentation"),
    "analyze": ("kizuna.analysis.cli", "figures of what a ViT learned (filters, positions, attention)"),
}


class _Parser(argparse.ArgumentParser):
    """Every kizuna parser (sub-commands are made of the parser's own class): flags only as spelt in full.
    argparse took a unique prefix for the whole flag, so another command's flag was silently something else
    (`eval linear-probe --seed 5`, `kizuna train`'s seed, ran 5 few-shot draws as --seeds 5; `--image` was
    --image-column, `--mode` --model)."""

    argv: list[str] = []  # the command line being parsed (set by _run_command), for the hints in error()

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """argparse's error, with the flags typed that this command does not have and its closest ones: a
        missing required flag was said without the flag typed in its place (`vit eval M --dataset D`: "the
        following arguments are required: --data")."""
        # (not from a parser of sub-commands: the flags typed are the sub-command's, which a mistyped command
        # name did not reach, and every one of them was called wrong)
        commands = any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
        if "unrecognized arguments" not in message and not commands:
            hints = unknown_flag_hints(self, _Parser.argv)
            message += f"; {hints}" if hints else ""
        super().error(message)


def unknown_flag_hints(parser: argparse.ArgumentParser, tokens: list[str]) -> str:
    """"--seed: this command has --seeds" for each flag in ``tokens`` that ``parser`` lacks (close names by
    difflib); "" when there is none."""
    import difflib

    known = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    said = []
    for token in dict.fromkeys(t.split("=", 1)[0] for t in tokens if t.startswith("--") and t != "--"):
        if token in known:
            continue
        close = difflib.get_close_matches(token, known, n=2, cutoff=0.7)
        close += [k for k in known if k not in close and (k.startswith(token) or token.startswith(k))][:2]
        said.append(f"{token} is not a flag of this command" + (f" (it has {' and '.join(close[:2])})" if close
                                                                else ""))
    return "; ".join(said)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kizuna",
        description="kizuna (絆): CLIP-style image-text models — train, evaluate, adapt, inspect.",
        epilog="Run `kizuna COMMAND --help` for a command's options.",
    )
    from kizuna import __version__

    parser.add_argument("--version", action="version", version=f"kizuna {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("kizuna"):
                continue  # a command whose module is not part of this build
            raise
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        _remember_parsers(p)
    return parser


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser as ``args._parser``, the deepest one winning: an unknown flag is reported with
    that command's usage (argparse reported it from the top, "kizuna: error: unrecognized arguments")."""
    parser.set_defaults(_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _remember_parsers(child)


class _Output:
    """sys.stdout or sys.stderr while a command runs. A reader that left the pipe early (`kizuna train 2>&1 |
    head -2`) raised BrokenPipeError at the next line printed, which stopped the command there: a training run
    ended without a checkpoint, `eval --out X | head -1` never wrote X. After the first broken pipe the rest of the
    output goes to os.devnull and the work carries on. A closed stream (`2>&-`: sys.stderr is None, and tqdm's bar
    failed with "'NoneType' object has no attribute 'write'") is os.devnull from the start."""

    def __init__(self, stream):
        self.broken = False
        self.lost: OSError | None = None  # a write that failed otherwise (a full disk, an I/O error)
        self._own = None if stream is not None else _null_text()  # closed in finish()
        self._stream = stream if stream is not None else self._own
        self._errors = _escape_unencodable(stream)  # the stream's own error handler, put back in finish()

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as e:
            self._failed(e)
            return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        try:
            self._stream.flush()
        except OSError as e:
            self._failed(e)

    def _failed(self, error: OSError):
        """A write that failed: the reader left (a broken pipe), or the log's disk is full or failing (`nohup
        kizuna train > ~/run.log` over a quota), which ended a training run mid-step without a checkpoint, and
        without a word (its only channel was the failing one). Either way the work carries on, the output to
        os.devnull; a failure other than a broken pipe makes the command's status 1 at its end."""
        if not isinstance(error, BrokenPipeError) and self.lost is None:
            self.lost = error
        self._reader_left()

    def _reader_left(self):
        import os

        self.broken = True
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # a stream in memory (the tests' capture) has none
            fd = None
        if fd is not None:
            # the stream's descriptor too: what stays in its buffer (flushed at exit) and what C code writes there
            # go nowhere, instead of "Exception ignored ... BrokenPipeError" when the interpreter ends
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        self._own = self._own or _null_text()  # closed in finish()
        self._stream = self._own

    def finish(self):
        self.flush()  # output still buffered when the reader left (`| head -1`) fails here, not at exit
        if self._errors is not None:
            try:
                self._errors[0].reconfigure(errors=self._errors[1])
            except (OSError, ValueError):  # closed or cut meanwhile: nothing to put back
                pass
        if self._own is not None:
            self._own.close()

    def __getattr__(self, name):  # encoding, isatty, fileno, ...: the stream's own
        if name.startswith("_"):  # not this object's own attributes (before __init__ set them: a copy, a pickle)
            raise AttributeError(name)
        return getattr(self._stream, name)


def _null_text():
    """os.devnull as a text stream that takes any text: in the locale's encoding, under an ASCII locale
    (LC_ALL=C) `kizuna --help >&-` failed on the kanji of the description."""
    import os

    return open(os.devnull, "w", encoding="utf-8", errors="replace")


def _escape_error(err):
    """The codec error handler of a non-UTF-8 stdout/stderr: a byte that came in undecodable (a file name from the
    file system, an argument, as lone surrogates) goes out as that byte again (surrogateescape); a character the
    locale cannot write (an accented letter under an ASCII locale) as its backslash escape, where Python raised
    UnicodeEncodeError: `kizuna --help` crashed on the kanji of the description, and a class named "cafe" with an
    accent stopped `eval --out` before its files were written."""
    c = err.object[err.start]
    if isinstance(err, UnicodeEncodeError) and "\udc80" <= c <= "\udcff":
        return bytes([ord(c) - 0xDC00]), err.start + 1
    if isinstance(err, UnicodeEncodeError):
        return c.encode("ascii", "backslashreplace").decode("ascii"), err.start + 1
    raise err


def _escape_unencodable(stream):
    """Switch a text stream whose encoding is not UTF-8, or a UTF-8 one that is strict, to :func:`_escape_error`;
    -> (stream, its errors before), or None where nothing was changed (UTF-8 with surrogateescape, a stream in
    memory, a closed stream). A strict UTF-8 stream (PYTHONIOENCODING=utf-8, common in containers and CI; a
    desktop's UTF-8 locale) failed on a file name's undecodable byte after the work: "error", exit 2."""
    encoding, reconfigure = getattr(stream, "encoding", None), getattr(stream, "reconfigure", None)
    if not encoding or reconfigure is None:
        return None
    try:
        if codecs.lookup(encoding).name == "utf-8" and stream.errors != "strict":
            return None
        before = stream.errors
        reconfigure(errors=_ESCAPE)
    except (LookupError, OSError, ValueError, AttributeError):  # an unknown codec, a closed or broken stream
        return None
    return stream, before


_ESCAPE = "kizuna.escape"
codecs.register_error(_ESCAPE, _escape_error)


def text_argument(value: str) -> str:
    """A free-text command-line value (a label, a template, a caption, a column name; never a path) as typed. Under
    a non-UTF-8 locale (LC_ALL=C) Python hands argv's non-ASCII bytes over as lone surrogates, one per byte:
    tokenised so, a label with an accent gave other probabilities than the same label read from a file. A path
    keeps them: the file system takes exactly those bytes back. Bytes that are not UTF-8 stay surrogates."""
    import os

    if not any("\udc80" <= c <= "\udcff" for c in value):  # ASCII, or already text (main() called from Python)
        return value
    try:
        return os.fsencode(value).decode("utf-8", "surrogateescape")
    except UnicodeError:  # surrogates mixed with text that the file system encoding cannot take back
        return value


# main() swaps process-wide things (sys.stdout/stderr, warnings.showwarning, torch's thread count) and puts them
# back: two calls at once in threads of one program each put back what the other had set (a host application's
# warnings then read as kizuna's). One call at a time; reentrant, for a command that runs another.
_ONE_AT_A_TIME = threading.RLock()


def main(argv: list[str] | None = None) -> int:
    """The ``kizuna`` command line: runs one command, returns its exit status (argparse's usage errors and
    ``--help`` raise SystemExit, as argparse does). Calls from several threads run one after another.

    Ctrl-C and SIGTERM end the command (after its cleanup, one line said) with ``SystemExit(130)`` and
    ``SystemExit(143)``, raised, not returned: a program that calls main() in a loop stops, as a shell's loop
    does; with a returned status it went on to the next command and ended with status 0."""
    from kizuna.data.tar_index import reset_warnings

    import warnings

    with _ONE_AT_A_TIME, warnings.catch_warnings():
        # a damaged shard is warned about in each command that reads it, and each warning in each command: Python
        # shows a warning once per place until the filters change, and from a process's third `kizuna train` on
        # ("these shards are not read", the warm-up's) none was shown; catch_warnings starts that record afresh
        # and gives the caller's filters back
        reset_warnings()
        return _main_with_output(argv)


def console_main() -> int:
    """The ``kizuna`` console script (and ``python -m kizuna``): :func:`main`, then Ctrl-C ignored while the
    interpreter shuts down. Torch's finalizers take 1-2 s after the last line is printed, and a Ctrl-C there (the
    user sees the command done) printed "Exception ignored in atexit callback ... KeyboardInterrupt" or ended a
    command whose files were all written with status -2. Not main's: a program that calls it keeps its Ctrl-C."""
    import signal

    try:
        return main()
    finally:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # (not the main thread)
            pass


def _main_with_output(argv: list[str] | None) -> int:
    streams = sys.stdout, sys.stderr
    outputs = _Output(sys.stdout), _Output(sys.stderr)
    sys.stdout, sys.stderr = outputs
    try:
        code = _main(argv)
    finally:
        for output in reversed(outputs):  # last in, first out: one stream as both put back its own error handler
            output.finish()
        sys.stdout, sys.stderr = streams  # main() called from Python (the tests) leaves the process as it was
    lost = [(name, output.lost) for name, output in zip(("stdout", "stderr"), outputs) if output.lost is not None]
    for name, error in lost:  # said where it can still be read: stderr, or stdout where it is a terminal (a
        other = streams[1] if name == "stdout" else streams[0]  # file there is the command's data: JSON, say)
        try:
            if name == "stdout" or other.isatty():
                print(f"kizuna: writing to {name} failed ({error.strerror or error}); the output from then on was "
                      "lost", file=other, flush=True)
        except (OSError, ValueError, AttributeError):
            pass
    if code == 0 and lost:
        return 1
    # the work is done and its files written, but the output was cut: the status a shell gives a command that a
    # reader left early (SIGPIPE, 128 + 13), so that `set -o pipefail` still sees it; an error keeps its own status
    return 141 if code == 0 and any(output.broken for output in outputs) else code


class Terminated(SystemExit):
    """SIGTERM (`kill`, a scheduler's or a container's stop) while a command runs, raised where the command is so
    that its cleanup runs (each temp file's ``except BaseException``): without a handler SIGTERM ended the process
    on the spot, leaving hidden temp files (.e.npy.*.tmp, .results.json.*.tmp) beside the outputs. The command
    line says "terminated" in one line and exits with 143 (128 + 15, a shell's status for SIGTERM), as it exits
    with 130 for Ctrl-C. Not an Exception: ``except Exception`` must not carry on past it. A SystemExit of status
    143: uncaught (a script of the user's that calls train(), stopped by a scheduler after its checkpoint), the
    process ends with that status and no traceback, as SIGTERM itself would have ended it."""

    def __init__(self, code: int = 143):
        super().__init__(code)

    @classmethod
    def for_signal(cls, name: str) -> BaseException:
        """What a command raises for the signal ``name`` that stopped it: KeyboardInterrupt for Ctrl-C (exit 130),
        Terminated for SIGTERM (143) and SIGHUP (129: the terminal closed, an SSH session dropped)."""
        return KeyboardInterrupt() if name == "SIGINT" else cls(129 if name == "SIGHUP" else 143)


class _SigtermRaises:
    """While main() runs, in the main thread: SIGTERM raises :class:`Terminated`, once (a second one ends the
    process at once, cleanup or not); the default is put back after. Only where SIGTERM has its default action:
    one ignored (SIG_IGN) stays ignored, and a handler of the program that calls main() stays its own. The
    training loop sets its own while it runs (StopOnInterrupt: stop after the step and save) and puts this one
    back after it. Not under torchrun (WORLD_SIZE > 1): a rank waiting in a collective, in C code, never runs a
    Python handler, and the launcher's SIGTERM that stops the job would wait for its SIGKILL."""

    def __enter__(self):
        import os
        import signal

        self.previous, self.pending, self.resend = None, False, None
        self.in_hook, self.closing, self.lock = False, False, threading.RLock()  # (re-entered by a handler)
        if threading.current_thread() is threading.main_thread() and os.environ.get("WORLD_SIZE", "1") in ("", "1"):
            self.pid = os.getpid()
            try:
                if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                    self.previous = signal.signal(signal.SIGTERM, self._handle)
            except (ValueError, OSError):  # not settable here (an embedded interpreter's)
                pass
        if self.previous is not None:
            self.unraisable_hook = sys.unraisablehook
            sys.unraisablehook = self._swallowed
            # SIGHUP (the terminal closed, an SSH session dropped) likewise: by default it ended the command on the
            # spot, and a training run with nothing saved, silently, its workers' socket folders left in $TMPDIR
            hangup = getattr(signal, "SIGHUP", None)
            try:
                self.previous_hangup = (signal.signal(hangup, self._hang_up) if hangup is not None
                                        and signal.getsignal(hangup) is signal.SIG_DFL else None)
            except (ValueError, OSError):
                self.previous_hangup = None
        return self

    def _hang_up(self, signum, frame):
        import os
        import signal

        signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
        if os.getpid() != self.pid:  # a process forked from this one: as by default
            os.kill(os.getpid(), signum)
            return
        raise Terminated(129)

    _hang_up.kizuna_sigterm = True  # the training loop takes it over (stop after the step and save)

    def _swallowed(self, unraisable):
        """A SIGTERM that landed while a finalizer ran (a weakref callback, a __del__: torch runs them all the
        time) raised Terminated there, where Python prints it and goes on ("Exception ignored in ..."): the command
        ran to its end and exited 0, the scheduler's preemption ignored. Delivered again, it stops the command."""
        import os
        import signal

        if isinstance(unraisable.exc_value, Terminated) and os.getpid() == self.pid:
            # sent again from a thread, every 10 ms until it lands outside a finalizer and this hook: sent from here,
            # it was handled here and swallowed again; sent once, on a loaded machine it came while this hook was
            # still starting the thread (raised in here: dropped), and the command ran to its end
            self.in_hook = True
            try:
                with self.lock:
                    signal.signal(signal.SIGTERM, self._handle)
                    self.pending = True
                    if self.resend is None:
                        self.resend = threading.Thread(target=self._resend_while_pending, daemon=True)
                        self.resend.start()
            finally:
                self.in_hook = False
            return
        self.unraisable_hook(unraisable)

    def _resend_while_pending(self):
        import os
        import signal
        import time

        while True:
            time.sleep(0.01)
            with self.lock:  # (never once the handler is gone: the default would kill the process, no cleanup)
                if not self.pending or self.closing:
                    self.resend = None
                    return
                os.kill(self.pid, signal.SIGTERM)
                if signal.getsignal(signal.SIGTERM) != self._handle:  # the training loop's own (stop after the
                    # step and save) took it: sent again, it cut the save short. __exit__ still ends with 143
                    self.resend = None
                    return

    def _handle(self, signum, frame):
        import os
        import signal

        if os.getpid() != self.pid:  # a process forked from this one that set nothing of its own: as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.in_hook:  # raised in the unraisable hook it would be dropped: the resend thread sends it again
            return
        with self.lock:
            signal.signal(signum, self.previous)
            self.pending = False
        raise Terminated

    _handle.kizuna_sigterm = True  # the training loop takes SIGTERM over from it (trainer._ours_to_take)

    def __exit__(self, exc_type, *exc):
        import signal

        if self.previous is not None:
            if sys.unraisablehook == self._swallowed:
                sys.unraisablehook = self.unraisable_hook
            with self.lock:  # no resend after the handler is gone (the default would kill the process)
                self.closing, resend = True, self.resend
            if resend is not None:
                resend.join(timeout=1.0)
            if signal.getsignal(signal.SIGTERM) == self._handle:
                signal.signal(signal.SIGTERM, self.previous)
            if self.previous_hangup is not None and signal.getsignal(signal.SIGHUP) == self._hang_up:
                signal.signal(signal.SIGHUP, self.previous_hangup)
            if self.pending and exc_type is None:  # the command ended before the SIGTERM came again: not exit 0
                raise Terminated
        return False


def _main(argv: list[str] | None = None) -> int:
    command = ["kizuna"]  # "kizuna vit eval" once parsed: the command an interrupt's line names
    # Ctrl-C anywhere in here (the imports of build_parser take seconds; the cleanup after the command) is one
    # line too: outside the command's own try it printed a traceback
    try:
        with _SigtermRaises():
            return _run_command(argv, command)
    except KeyboardInterrupt:
        print(f"{command[0]}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Terminated as stopped:
        hung_up = stopped.code == 129
        print(f"{command[0]}: {'hung up (SIGHUP: the terminal closed)' if hung_up else 'terminated'}", file=sys.stderr)
        raise SystemExit(129 if hung_up else 143) from None


def _expand_home(args) -> None:
    from kizuna.apps.common import home_path

    for name, value in vars(args).items():
        if not name.startswith("_"):
            setattr(args, name, home_path(value))


def _run_command(argv: list[str] | None, command: list[str]) -> int:
    from .common import switches_given_alone

    parser = build_parser()
    _Parser.argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(switches_given_alone(parser, _Parser.argv))
    if unknown:
        deepest = getattr(args, "_parser", parser)
        hints = unknown_flag_hints(deepest, unknown)
        deepest.error(f"unrecognized arguments: {' '.join(unknown)}" + (f"; {hints}" if hints else ""))
    if not getattr(args, "_run", None):  # `kizuna` alone: the help, on stderr as the error it is (rc 2)
        parser.print_help(sys.stderr)
        return 2
    _expand_home(args)
    from kizuna.data.images import ImageError
    from kizuna.models.checkpoint import CheckpointError

    import warnings

    command[0] = getattr(args, "_parser", parser).prog  # "kizuna vit eval", as argparse's own errors say
    command = command[0]

    import threading

    from kizuna.data.loader import CommandWarnings

    owner, voice = threading.get_ident(), CommandWarnings(command)

    def show(message, category, filename, lineno, file=None, line=None):
        # one line in the command's voice: Python's form (file:line, the source line) is for programmers.
        # Once per text: Python's once-per-line rule printed torch's DataLoader worker warning twice (two lines).
        # A host's other threads (main() called in a notebook or service) keep their own form: their warnings
        # were relabelled as the command's and all but one of a kind dropped
        if threading.get_ident() != owner:
            showwarning(message, category, filename, lineno, file, line)
        else:
            voice(message, category, filename, lineno, file, line)

    show.kizuna_command = command  # (spawned loader workers speak so too: kizuna.data.loader._WorkerInit)
    showwarning, warnings.showwarning = warnings.showwarning, show
    import torch

    threads, threads_before = getattr(args, "threads", None), torch.get_num_threads()
    if isinstance(threads, int) and threads > 0:  # every command's --threads (the trainers set theirs again)
        from kizuna.apps.common import warn_if_threads_past_the_cores

        warn_if_threads_past_the_cores(threads)
        torch.set_num_threads(threads)
    try:
        try:
            with _loader_waits_limited(args):
                result = args._run(args)
        except OSError as e:  # (before the one-line path errors below: a FileNotFoundError here is no user's path)
            said = _worker_lost_in_handover(e)
            if said is None:
                raise
            print(f"{command}: error: {said}", file=sys.stderr)
            return 1
    # A bad path the user gave (missing, a file where a folder belongs, not writable, on a read-only file system)
    # is a one-line error, and so is a full disk (_disk_full); other OSErrors (a failing device) keep their
    # traceback.
    except (ImageError, CheckpointError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            FileExistsError, PermissionError) as e:
        print(f"{command}: error: {_in_this_commands_words(e, command, args)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left, and a write that bypassed _Output noticed: say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        import errno

        said = _too_many_open_files(e) or _out_of_memory(e, command) or _disk_full(e)
        if said is not None:
            print(f"{command}: error: {said}", file=sys.stderr)
            return 1
        if e.errno != errno.EROFS:  # a read-only file system is a place the user chose, as a folder without rights
            raise
        print(f"{command}: error: {e.strerror}: {e.filename or ''}; choose another --out", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        # (torch's loader says "Too many open files. Communication with the workers is no longer possible")
        from kizuna.data.loader import LoaderStalled

        out_of_memory = (str(e) if isinstance(e, LoaderStalled) else None) or _out_of_memory(e, command) \
            or _too_many_open_files(e) or _worker_died(e)
        if out_of_memory is None:
            raise
        print(f"{command}: error: {out_of_memory}", file=sys.stderr)
        return 1
    finally:  # main() called from Python (the tests) leaves the process as it was
        warnings.showwarning = showwarning
        torch.set_num_threads(threads_before)
    return int(result or 0)


def _loader_waits_limited(args):
    """The command's --loader-timeout-minutes over every loader it waits on that has no watcher of its own (the
    evaluators', `kizuna embed`'s; a training loop watches its own)."""
    import contextlib

    from kizuna.data.loader import loader_waits_watched, wait_watch

    minutes = getattr(args, "loader_timeout_minutes", None)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):  # (a training config's, unset: its own)
        return contextlib.nullcontext()
    return loader_waits_watched(wait_watch(minutes * 60))


def _worker_died(error: BaseException) -> str | None:
    """What to say of a data loader worker that died (the out-of-memory killer's SIGKILL, a decoder's segfault),
    or None: it was torch's 60-line traceback, ending inside the model where its SIGCHLD handler raised."""
    text = str(error)
    match = re.search(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\)"
                      r"(?: is killed by signal: ([^.]+)| exited unexpectedly)", text)
    if not isinstance(error, RuntimeError) or match is None:
        return None
    how = f"killed by signal {match.group(2).strip()}" if match.group(2) else "exited unexpectedly"
    return f"a data loader worker (pid {match.group(1).strip()}) {how}: " + _WORKER_ADVICE


_WORKER_ADVICE = ("the system's out-of-memory killer ends workers first (fewer --workers, a smaller --batch-size, or "
                  "more memory), and a decoder that crashes on one file says which with --workers 0")


# Where a batch's shared-memory tensors are taken over from the worker that made them (a file descriptor sent over
# a socket): a worker that died there surfaces as the socket's error, not torch's "DataLoader worker ... killed"
_HANDOVER_FILES = ("multiprocessing/reductions.py", "multiprocessing/resource_sharer.py")


def _worker_lost_in_handover(error: BaseException) -> str | None:
    """What to say of a loader worker that died while its batch was handed over (the socket's
    ConnectionResetError, ConnectionRefusedError or FileNotFoundError raised in torch's rebuild of the batch's
    tensors), or None: the training, evaluation and embed commands ended with that traceback."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not any(frame.filename.replace("\\", "/").endswith(_HANDOVER_FILES) for frame in frames):
        return None
    return (f"a data loader worker ended while handing over a batch ({type(error).__name__}: {error}): "
            + _WORKER_ADVICE)


def _disk_full(error: OSError) -> str | None:
    """One line for a write that found no room (a full disk, a quota, a file size limit; kizuna's own message of a
    path too long), else None: kizuna's own messages say what was written and what is intact, and came after 20-45
    lines of chained traceback."""
    import errno

    if error.errno not in (errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return None
    text = re.sub(r"^\[Errno \d+\] ", "", str(error))
    systems = error.strerror == os.strerror(error.errno)  # the system's words alone ("No space left on device: 'x'")
    if error.errno == errno.ENAMETOOLONG:
        return None if systems else text  # (kizuna's own: the checkpoint's says what to do)
    if systems:
        text += ("; raise the file size limit (`ulimit -f`), or write smaller files" if error.errno == errno.EFBIG
                 else "; free space there (or raise the quota), or write elsewhere")
    return text


def _too_many_open_files(error: BaseException) -> str | None:
    """One line for the open-file limit reached (``ulimit -n``), else None. A loader worker's error arrives with
    its errno lost and a traceback in its text: the line that says it is taken from there."""
    import errno
    import re

    text = str(error)
    if getattr(error, "errno", None) not in (errno.EMFILE, errno.ENFILE) and "too many open files" not in text.lower():
        return None
    lines = [re.sub(r"^(kizuna\.data\.sources\.TooManyOpenFiles: )?(\[Errno \d+\] )?", "", line.strip())
             for line in text.splitlines()]
    said = next((line for line in lines if line.startswith("too many open files reading")), "")
    return said or ("too many open files: the process's limit is reached; raise it (`ulimit -n 4096`) or pass "
                    "fewer --workers")


def _without_worker_traceback(message: str) -> str:
    """A refusal raised in a loader worker reaches the main process as torch re-raises it: "Caught X in DataLoader
    worker process 0.", the worker's whole traceback, then "module.X: the message". The message alone."""
    lines = message.splitlines()
    if not (lines and lines[0].startswith("Caught ") and "DataLoader worker process" in lines[0]
            and len(lines) > 2 and lines[1].startswith("Original Traceback")):
        return message
    name = lines[0][len("Caught "):].split(" in DataLoader worker process")[0]
    for i in range(len(lines) - 1, 1, -1):
        head, colon, rest = lines[i].partition(": ")
        if colon and (head == name or head.endswith("." + name)):
            return "\n".join([rest, *lines[i + 1:]]).strip()
    return message


def _in_this_commands_words(error: BaseException, command: str, args) -> str:
    """A refusal's advice as ``command`` can follow it, where the readers' own would not work there.

    The `kizuna vit` commands read labelled images: a retrieval dataset's advice "evaluate it with `kizuna eval
    retrieval`" sent a ViT there, which sent it back to `kizuna vit eval`. The TorchScript refusal's --allow-jit,
    followed where the command has none, failed as "unrecognized arguments" (`kizuna train`, `vit finetune`,
    `eval suite`): a suite run has its "allow_jit" key; the trainers take a kizuna folder converted from the
    archive once (its code runs then, not inside a long run)."""
    from kizuna.models.checkpoint import TORCHSCRIPT_ADVICE

    message = _without_worker_traceback(str(error))
    if command.startswith("kizuna vit"):
        message = message.replace(
            "; evaluate it with `kizuna eval retrieval`",
            ": the `kizuna vit` commands need images with class labels; image-caption data trains a CLIP "
            "(`kizuna train`), whose retrieval `kizuna eval retrieval` evaluates")
    if TORCHSCRIPT_ADVICE in message and command.endswith("eval suite"):  # (the run's key and the command's flag)
        return message.replace(TORCHSCRIPT_ADVICE, "set the run's \"allow_jit\": true and pass --allow-jit, only if "
                                                   "you trust its source")
    if TORCHSCRIPT_ADVICE not in message or hasattr(args, "allow_jit"):
        return message
    path = getattr(error, "torchscript_path", None)
    if path is None:
        return message
    import json
    import shlex

    folder = os.path.splitext(os.path.basename(path))[0] + "-kizuna"
    # a shell line that survives any path (": ", quotes, $): JSON strings are Python literals, shlex quotes the rest
    code = f"import kizuna; kizuna.save_model(kizuna.create_model({json.dumps(path)}, allow_jit=True), {json.dumps(folder)})"
    convert = f"python -c {shlex.quote(code)}"
    return message.replace(TORCHSCRIPT_ADVICE, f"{command} loads none. If you trust its source, convert it once: {convert}, "
                                        f"and give the folder {folder} instead")


def _out_of_memory(error: BaseException, command: str = "") -> str | None:
    """What to say of an allocation that failed (torch's CPU allocator, CUDA's, Python's MemoryError), or None
    for another error: it was a 30-line traceback ending in "DefaultCPUAllocator: can't allocate memory",
    naming none of the flags that make a step smaller."""
    text = str(error)
    if "unable to allocate shared memory" in text:  # a loader worker's batch, past /dev/shm (Docker's 64 MB)
        return ("out of shared memory (/dev/shm) for the loader workers' batches: pass --workers 0, or give the "
                "container more (docker run --shm-size=2g)")
    import errno

    # ENOMEM (a read, a fork); a loader worker's arrives with its errno lost and "[Errno 12]" in its text
    if isinstance(error, OSError) and (error.errno == errno.ENOMEM or (error.errno is None and (
            f"[Errno {errno.ENOMEM}]" in text or "Cannot allocate memory" in text))):
        return ("out of memory (the system could not allocate memory: Cannot allocate memory): a smaller "
                "--batch-size or fewer --workers, or a machine with more memory")
    cuda = "CUDA out of memory" in text or type(error).__name__ == "OutOfMemoryError"
    # oneDNN's primitive creation fails so when its scratch memory cannot be allocated (under `ulimit -v`)
    onednn = "could not create a primitive" in text
    if not (isinstance(error, MemoryError) or cuda or onednn or "can't allocate memory" in text):
        return None
    first = next((line.strip() for line in text.splitlines() if "allocate" in line), text.splitlines()[0] if text
                 else type(error).__name__)
    # (the decoded training set of `kizuna vit train --augment-on device` lies on the GPU whole)
    on_device = command.startswith(("kizuna vit train", "kizuna vit finetune"))  # (the commands that have it)
    held = (("; an --augment-on device run holds its decoded images on the GPU: --augment-on loader keeps them in "
             "host memory" if on_device else "") if cuda else
            "; an evaluation or `kizuna embed` holds every item's features in memory at once (items "
            "x the model's embed_dim x 4 bytes): fewer items at a time (--max-samples where the command has one, or "
            "the data in parts)")
    return (f"out of {'GPU ' if cuda else ''}memory ({first}): a smaller --batch-size where the command has one; "
            f"a trainer also takes --grad-checkpointing, and `kizuna train` --accum-steps N (the same batch in N "
            f"parts){held}; "
            "or a smaller model, or a machine with more memory")


if __name__ == "__main__":
    sys.exit(main())
