"""Give memory back to the operating system between stages and between students, and hold
less while training.

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

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc malloc.h)


@lru_cache(maxsize=1)
def _libc():
    """The C library, or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _glibc(name: str):
    """A glibc function, or None where the C library has none (macOS, musl)."""
    return getattr(_libc(), name, None)


def set_mmap_threshold(nbytes: int | None) -> bool:
    """Give every allocation of at least ``nbytes`` its own mapping, returned to the OS when
    freed, and keep up to twice that free at the heap's top; None keeps glibc's defaults.
    Returns whether the setting took.

    glibc's threshold is dynamic: it rises to the size of each larger mapped block freed (up to
    32 MiB), after which a step's tensors come from the heap, where freed holes between live
    blocks stay resident. A fixed threshold turns that off, and the trim threshold's rise with
    it (glibc keeps it at twice the mmap threshold): both are set, as glibc would. Every
    allocation above the threshold faults its pages in afresh, so a low one costs time where
    tensors of a few MiB come and go: at 1 MiB a refine step's rollout took 1.6x and its
    training forward and backward 1.5x what they took at 16 MiB (docs/performance.md, memory;
    ``benchmarks/allocator.py``).
    """
    mallopt = _glibc("mallopt")
    if nbytes is None or mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes))) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * int(nbytes))
    )


def checkpoint_layers(model) -> None:
    """Recompute each transformer layer's activations in the backward pass instead of holding
    them (transformers' activation checkpointing, non-reentrant).

    A training forward then holds the layers' outputs and one layer's activations at a time,
    not every layer's: a SmolLM2-135M forward of 4 x 432 tokens (a refine step, a distillation
    micro-batch) holds 1.4 GB of activations in bf16 otherwise. The cost is one more forward per
    backward; the gradients are the same, bit for bit (tests/test_memory.py), so it is a memory
    setting, not part of any artifact's key. transformers recomputes a layer only while the
    layer is in training mode: for a model held in eval mode (refine: no dropout) call
    :func:`recompute_in_eval` after each ``eval()``.
    """
    model.activation_checkpointing_enable({"use_reentrant": False})


def recompute_in_eval(model) -> None:
    """Mark the checkpointed layers alone as training, so a model in eval mode still recomputes
    them; their submodules (attention, dropout) stay in eval mode."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            module.training = True


def release() -> None:
    """Collect unreachable cycles, empty the CUDA cache and return freed heap pages to the OS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if trim := _glibc("malloc_trim"):
        trim(0)
