"""The `kizuna` command line.

Each subcommand lives in its own module with two functions, ``add_arguments(parser)`` and
``run(args)``; this file only wires them up and turns expected errors into one clear line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from kizuna.data.images import ImageError
    from kizuna.models.checkpoint import CheckpointError

    import warnings

    command = getattr(args, "_parser", parser).prog  # "kizuna vit eval", as argparse's own errors say

    def show(message, category, filename, lineno, file=None, line=None):
        # one line in the command's voice: Python's form (file:line, the source line) is for programmers
        print(f"{command}: warning: {message}", file=file or sys.stderr)

    showwarning, warnings.showwarning = warnings.showwarning, show
    import torch

    threads, threads_before = getattr(args, "threads", None), torch.get_num_threads()
    if isinstance(threads, int) and threads > 0:  # every command's --threads (the trainers set theirs again)
        torch.set_num_threads(threads)
    try:
        result = args._run(args)
    # A bad path the user gave (missing, a file where a folder belongs, not writable, on a read-only file system)
    # is a one-line error; other OSErrors (a full disk, a failing device) keep their traceback.
    except (ImageError, CheckpointError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            FileExistsError, PermissionError) as e:
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kizuna info X | head`: the reader left; say nothing more (Python's advice)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        import errno

        if e.errno != errno.EROFS:  # a read-only file system is a place the user chose, as a folder without rights
            raise
        print(f"{command}: error: {e.strerror}: {e.filename or ''}; choose another --out", file=sys.stderr)
        return 2
    finally:  # main() called from Python (the tests) leaves the process as it was
        warnings.showwarning = showwarning
        torch.set_num_threads(threads_before)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
