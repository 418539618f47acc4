"""Give memory back to the operating system between stages and between students.

A stage's models and activations are garbage once it returns, but CPython and glibc keep what
they freed: reference cycles (Lightning's trainer and module point at each other) wait for the
cyclic collector, and glibc's per-thread arenas keep freed pages mapped. In a default run the
process held 2.7 GB after distillation, of which ``gc.collect`` returned 0.5 GB and
``malloc_trim`` another 1.4 GB, so each later stage started 1.9 GB lower (README, memory).
"""

import ctypes
import ctypes.util
import gc
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Collect unreachable cycles, empty the CUDA cache and return freed heap pages to the OS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if trim := _malloc_trim():
        trim(0)
