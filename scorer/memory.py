"""Giving freed memory back to the system, so that a long-running process stays at its working size."""

from __future__ import annotations

import ctypes
import gc


def trim_heap(*, collect: bool = True) -> None:
    """Hand memory that Python and the libraries freed back to the system (glibc keeps it otherwise).

    `collect`: first free what only reference cycles hold (an unpickled learner has many); a full collection
    walks every object, a quarter of a second once PyTorch is loaded. Arrays are freed as soon as they are
    dropped, so after decoding images there is nothing for it to find.
    """
    if collect:
        gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator decides
        pass
