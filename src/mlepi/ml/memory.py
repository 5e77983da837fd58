"""Keep freed memory in the process for the next prediction, instead of handing it back to the OS.

glibc's malloc serves large requests (above a threshold that grows to 32 MiB) with fresh ``mmap`` regions and
gives a large free top of the heap back with ``trim``. Every forward pass on a big structure then faults its
working set in page by page again: at 10^4 atoms that made HedgeNet's time per atom 1.7 times that at 576 atoms
(profiled, ``benchmarks/NOTES.md``). With the threshold raised and trimming off, the second and later
predictions reuse the first one's memory and the time per atom stays flat; the peak resident memory is the
same, but the process keeps it until it exits. Only for processes that predict repeatedly (infer, linearize,
supercell bands, the performance benchmark).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Tune glibc malloc as above; False (and nothing changed) where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all((mallopt(_M_MMAP_THRESHOLD, 2**31 - 1),  # requests up to 2 GiB come from the heap
              mallopt(_M_TRIM_THRESHOLD, -1),  # -1 is SIZE_MAX to glibc: never trim the heap
              mallopt(_M_TOP_PAD, 2**30)))  # grow the heap in 1 GiB steps
    if not ok:
        log.debug("mallopt refused a setting; freed memory may still go back to the OS")
    return bool(ok)
