"""precision=auto: bf16 where the hardware has it, fp32 elsewhere; never two precisions in one
cache entry or one artifact."""

import pytest

from lmcot import precision
from lmcot.artifacts import artifact

TINY = ["debug=smoke", "student=tiny_llama", "data.num_train=12"]
AMX = frozenset({"sse4_2", "avx512f", "amx_tile", "amx_bf16"})
NO_BF16 = frozenset({"sse4_2", "avx2", "avx512f"})


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to run on a CPU with the given flags (and no GPU)."""
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    return lambda flags: monkeypatch.setattr(precision, "cpu_flags", lambda: flags)


@pytest.mark.parametrize("flags, dtype, trainer", [
    (AMX, "bfloat16", "bf16-mixed"),
    (frozenset({"avx512_bf16"}), "bfloat16", "bf16-mixed"),
    (NO_BF16, "float32", "32-true"),
])  # fmt: skip
def test_auto_follows_the_cpu_and_an_override_wins(cpu, flags, dtype, trainer):
    cpu(flags)
    assert precision.model_dtype("auto", "cpu") == dtype
    assert precision.trainer_precision("auto", "cpu") == trainer
    assert precision.model_dtype("fp32") == "float32"
    assert precision.trainer_precision("fp32", "cpu") == "32-true"
    assert precision.trainer_precision("bf16-true", "cpu") == "bf16-true"


def test_the_configs_resolve_auto_and_precision_fp32_gives_fp32_back(cpu, cfg_factory):
    cpu(AMX)
    auto = cfg_factory("student=smollm2_lora", config_name="train")
    assert precision.training_precision(auto.trainer) == "bf16-mixed"
    assert precision.model_dtype(auto.reader.dtype, "cpu") == "bfloat16"
    fp32 = cfg_factory("precision=fp32", config_name="train")
    assert precision.training_precision(fp32.trainer) == "32-true"
    assert {fp32.reader.dtype, fp32.student.dtype} == {"fp32"}


def test_precision_is_in_the_training_keys_as_it_resolves(cpu, cfg_factory):
    overrides = [*TINY, "precision=auto"]
    cpu(AMX)
    bf16 = [artifact(cfg_factory(*overrides, config_name="train"), s).key
            for s in ("distill", "refine")]  # fmt: skip
    cpu(NO_BF16)
    fp32 = [artifact(cfg_factory(*overrides, config_name="train"), s).key
            for s in ("distill", "refine")]  # fmt: skip
    assert bf16[0] != fp32[0] and bf16[1] != fp32[1]
    # the student's dtype is how it generates later, not how it trains: no retraining
    same = cfg_factory(*TINY, "+student.dtype=bf16", config_name="train")
    assert artifact(same, "distill").key == fp32[0]
