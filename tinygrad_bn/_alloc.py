"""Keep freed large arrays in the heap instead of returning them to the OS (glibc only).

A composed BatchNorm allocates a dozen temporaries of the input's size per step. With glibc's
defaults each one above 128 KiB is a fresh ``mmap`` that is page-faulted in and
unmapped again, which made a (256, 1024) forward+backward about 6x slower than the NumPy work
itself. Raising the mmap and trim thresholds lets malloc reuse the memory, as PyTorch's
caching allocator does. Process-wide; set ``TINYGRAD_BN_NO_MALLOPT=1`` to leave malloc alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum: arrays up to 32 MiB come from the heap
_TRIM_THRESHOLD = 1024 * 1024 * 1024  # keep up to 1 GiB of freed heap before trimming

applied = False


def tune_malloc() -> bool:
    """Apply the thresholds once; returns True when glibc's ``mallopt`` accepted them."""
    global applied
    if applied or os.environ.get("TINYGRAD_BN_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return applied
