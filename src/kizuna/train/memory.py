"""Keep freed memory inside the process while training on the CPU, so a step does not page-fault its tensors in again.

A training step allocates its activations and gradients afresh and frees them at the end. glibc's ``malloc``
serves blocks over its mmap threshold (at most 32 MB) straight from the OS and returns them on ``free``, and
it gives the top of its heap back once that exceeds its trim threshold. Memory that comes back from the OS is
zero-filled page by page on first touch (a minor page fault per 4 KB), so every step pays for it again. On the
2-core Xeon a ViT-B/32 CLIP step at batch 32 took 160,000 faults and 6.1 s by default, and 0 faults and 5.1 s
with the memory kept, for the same peak memory (benchmark section ``allocator``, docs/benchmarks/XEON.md).

:func:`keep_freed_memory` sets two documented ``mallopt`` parameters: ``M_MMAP_MAX = 0`` (no mmap for
large blocks: they come from the heap) and ``M_TRIM_THRESHOLD = -1`` (never trim the heap). The process then
holds on to its peak memory, which a training loop needs again at every step anyway. Only for glibc on Linux;
elsewhere nothing changes. The trainers call it on the CPU unless ``keep_freed_memory`` is off, and
:func:`release_kept_memory` when they finish: glibc's defaults back, and the kept memory handed to the OS (a
notebook that trained a model no longer holds the run's peak for the rest of its life). Where the environment
tunes glibc's allocator itself (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
``GLIBC_TUNABLES`` with ``glibc.malloc.``), neither is done: the release reset those settings to glibc's
defaults for the rest of the process.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults (malloc/malloc.c)
DEFAULT_MMAP_MAX = 65536


def _glibc():
    """The process's C library if it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process, the C library's among them
        libc.gnu_get_libc_version  # glibc only (musl has a mallopt that does nothing)
        return libc
    except (OSError, AttributeError):
        return None


def malloc_tuned_by_environment(environ=None) -> bool:
    """Whether the process was started with glibc malloc settings of its own (docs/benchmarks/XEON-MALLOC.md
    shows such a tuning), which :func:`keep_freed_memory` and :func:`release_kept_memory` would override."""
    import os

    environ = os.environ if environ is None else environ
    names = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_")
    return any(environ.get(name) for name in names) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory in the process (see the module docstring). Returns whether
    it took effect; False on other platforms and C libraries, and where the environment tunes malloc itself."""
    libc = _glibc()
    if libc is None or malloc_tuned_by_environment():
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) & bool(mallopt(M_TRIM_THRESHOLD, -1))


def release_kept_memory() -> bool:
    """Undo :func:`keep_freed_memory`: glibc's default mmap count and trim threshold (set explicitly, the trim
    threshold no longer adapts as glibc's own default does; that is the one difference), and the free memory at
    the top of the heap returned to the OS now (``malloc_trim``). Returns whether it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)) & bool(mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD))
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.malloc_trim(0)
    return ok
