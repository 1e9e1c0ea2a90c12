"""glibc's memory allocator, set up for optimisation loops on the CPU (docs/benchmarks.md, "Speed
on the CPU").

By default glibc serves every allocation above a threshold (128 KiB at first, raised as blocks are
freed, never above 32 MiB) with a fresh `mmap` and hands it back to the kernel when it is freed.
Each optimisation step allocates and frees the same activations (megabytes each), so every step
paid page faults and the kernel's zeroing of new pages: on the CPU the scratch method spent about
a sixth of its time in the kernel. Raising the threshold to its maximum and never trimming the heap
keeps freed memory for the next step. Only where memory comes from changes, not any arithmetic:
the images are bitwise the same.

Torch-free and cheap (ctypes), so the command line sets it before any stage runs. A no-op off
glibc, and where the user set glibc's allocator through the environment (`MALLOC_*` variables or
`GLIBC_TUNABLES`), which then stands.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # never give the heap's top back
TOP_PAD = 64 * 1024 * 1024  # grow the heap in large steps


def _user_set() -> bool:
    return any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", "")


def tune() -> bool:
    """Apply the settings above to this process; True when they took effect."""
    if not sys.platform.startswith("linux") or _user_set():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    done = [
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        mallopt(_M_TOP_PAD, TOP_PAD),
    ]
    return all(d == 1 for d in done)
