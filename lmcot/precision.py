"""Numeric precision as configuration: ``auto`` is bf16 where the hardware computes it fast,
fp32 elsewhere.

One top-level ``precision`` (``auto | bf16 | fp32``) feeds ``trainer.precision`` and every
model's ``dtype``; each also takes its own library's names (``bf16-mixed``, ``float32``, ...).
bf16 pays where matrix units compute it: CUDA devices with bf16, and CPUs with AMX or AVX-512
bf16 (``benchmarks/precision.py`` measures it side by side). Training stays mixed: what is
trained keeps fp32 weights under bf16 autocast, while a LoRA student's frozen base is held in
bf16 (:func:`training_dtype`). Inference holds bf16 weights (half the memory). The resolved
dtype names a model in the LM cache and in artifact keys, so a bf16 answer never serves an
fp32 run, and ``results.json`` records what each model ran in.
"""

from functools import lru_cache

import torch

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of bf16 matrix instructions
MODEL_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
TRAINER_PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def bf16_supported(device_type: str) -> bool:
    """Whether ``device_type`` (``cpu`` or ``cuda``) computes bf16 matrix products natively."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def device_type(device: str | None) -> str:
    """``cpu`` or ``cuda`` for a model's ``device`` or a trainer's ``accelerator`` setting."""
    device = str(device or "auto")
    if device in ("auto", "gpu"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def model_dtype(dtype: str, device: str | None = "auto") -> str:
    """A model's ``dtype`` setting as a torch dtype name.

    >>> model_dtype("fp32"), model_dtype("bfloat16")
    ('float32', 'bfloat16')
    """
    if dtype == "auto":
        return "bfloat16" if bf16_supported(device_type(device)) else "float32"
    return MODEL_DTYPES.get(dtype, dtype)


def trainer_precision(precision: str, accelerator: str | None = "auto") -> str:
    """A trainer's ``precision`` setting as Lightning's: ``auto`` is ``bf16-mixed`` where the
    accelerator has bf16, else ``32-true``.

    >>> trainer_precision("fp32"), trainer_precision("bf16-true")
    ('32-true', 'bf16-true')
    """
    precision = str(precision)
    if precision == "auto":
        return "bf16-mixed" if bf16_supported(device_type(accelerator)) else "32-true"
    return TRAINER_PRECISIONS.get(precision, precision)


def training_precision(trainer) -> str:
    """The Lightning precision a ``trainer`` config node trains in."""
    return trainer_precision(trainer.get("precision", "auto"), trainer.get("accelerator"))


def training_dtype(student, trainer) -> str:
    """The torch dtype a ``student`` config node is loaded in to train under ``trainer``.

    Under mixed precision a LoRA student's frozen base keeps its inference dtype: bf16 halves
    the model's memory and autocast computes in bf16 either way, while PEFT keeps the adapters,
    the only weights trained, in fp32. A fully trained student, or training in fp32, loads
    fp32 master weights.
    """
    if student.get("lora") and training_precision(trainer).endswith("-mixed"):
        return model_dtype(student.dtype, student.get("device", "auto"))
    return "float32"
