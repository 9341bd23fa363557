"""Optional packages: one error for a missing one, naming the ``pip install 'kizuna[extra]'`` that brings it.

:class:`MissingExtra` is an ImportError (what Python callers catch for a missing package) and a ValueError
(what kizuna's command line prints as a one-line error, exit 2; an ImportError alone came out as a
traceback), and the model loader lets it through as it is, not as "a record this kizuna does not build"."""

from __future__ import annotations

import importlib

__all__ = ["MissingExtra", "require"]


class MissingExtra(ImportError, ValueError):
    """An optional package is not installed; the message says how to install it."""


def require(module: str, what: str, extra: str, alternative: str = ""):
    """``import module``, or :class:`MissingExtra` saying that ``what`` needs it and naming ``kizuna[extra]``
    (and ``alternative``, another way to install it, when given)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0] and e.name != module:
            raise  # the package is there, and something it imports is not: that error says what
        raise MissingExtra(f"{what} needs the {module} package: pip install 'kizuna[{extra}]'"
                           + (f" (or {alternative})" if alternative else "")) from None
    except ImportError as e:  # installed, and broken (a shared library missing): its own error says why
        raise MissingExtra(f"{what} needs the {module} package, which is installed but does not import ({e}); "
                           f"reinstall it: pip install --force-reinstall 'kizuna[{extra}]'") from e
