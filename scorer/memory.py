"""Giving freed memory back to the system, so that a long-running process stays at its working size."""

from __future__ import annotations

import ctypes
import gc


def trim_heap() -> None:
    """Hand memory that Python and the libraries freed back to the system (glibc keeps it otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator decides
        pass
