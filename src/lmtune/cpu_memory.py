"""CPU training: stop glibc from handing freed tensor memory back to the OS every step.

By default glibc serves large allocations with fresh mmap()s (or trims the heap top) and returns
them on free. A training step frees and re-allocates the same activation-sized buffers hundreds of
times, so every step page-faults its working set in again and the kernel zeroes it: measured here,
53 million minor page faults and 235 s of system time in a 148-step run of the main job (27% of
its CPU time). Raising the mmap and trim thresholds keeps those buffers in the process for reuse;
peak RSS grows by the memory that stays cached. The numbers behind the chosen values are in
benchmarks/README.md. Linux/glibc only (mallopt); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1   # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Apply the thresholds to this process; True when glibc accepted both."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
