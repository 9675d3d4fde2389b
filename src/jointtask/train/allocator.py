"""Keep freed memory inside the training process (glibc malloc settings).

A training step allocates and frees dozens of tensors of a few megabytes (activations of
[tokens, 4 x width] floats). glibc serves blocks above its mmap threshold with fresh pages and
hands memory freed at the top of its heap back to the kernel, so the next step takes a page fault
on every 4 KiB page and the kernel zeroes each one: measured here, about 2,000 faults and 3.8 ms
of system time per width-64 training step, and 4-14% of our loop's throughput at widths 16-128 (`jointtask bench`, docs/performance.md).
Raising the mmap threshold to glibc's maximum (32 MiB) and the trim threshold to 1 GiB keeps
freed blocks for reuse. The memory a process holds stays near its peak instead of shrinking
between steps; that peak is what the step needs anyway.

`JOINTTASK_MALLOC=default` leaves glibc's defaults alone (for comparisons). Elsewhere than
Linux with glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 << 20  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD = 1 << 30

_applied = False


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when they are in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get("JOINTTASK_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # absent on musl and other C libraries
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
