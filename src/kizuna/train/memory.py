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
:func:`release_kept_memory` when they finish: large blocks from mmap again (at the thresholds glibc's own
adaptation reaches), and the kept memory handed to the OS (a
notebook that trained a model no longer holds the run's peak for the rest of its life). Where the environment
tunes glibc's allocator itself (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
``GLIBC_TUNABLES`` with ``glibc.malloc.``), neither is done: the release reset those settings to glibc's
defaults for the rest of the process.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536  # glibc's default (malloc/malloc.c)
# Where glibc's own dynamic thresholds end up once a block of its largest mmap size (32 MiB on 64-bit) was freed:
# any mallopt of these turns the adaptation off for good, so the release sets the adapted values themselves
ADAPTED_MMAP_THRESHOLD = 32 * 1024 * 1024
ADAPTED_TRIM_THRESHOLD = 2 * ADAPTED_MMAP_THRESHOLD


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
    """Undo :func:`keep_freed_memory`: large blocks from mmap again, the thresholds where glibc's own adaptation
    takes them after a run's large frees (mmap above 32 MiB, trim above 64 MiB), and the free memory at the top
    of the heap returned to the OS now (``malloc_trim``). Any mallopt of these stops glibc adapting them for the
    rest of the process: the defaults set back (128 KiB) sent every block over 128 KiB to mmap and back, zero-
    filled on each use (3x the page faults, ~10% slower than a fresh process). Returns whether it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = (bool(mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)) & bool(mallopt(M_MMAP_THRESHOLD, ADAPTED_MMAP_THRESHOLD))
          & bool(mallopt(M_TRIM_THRESHOLD, ADAPTED_TRIM_THRESHOLD)))
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.malloc_trim(0)
    return ok
