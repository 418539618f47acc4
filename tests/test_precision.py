"""precision=auto: bf16 where the hardware has it, fp32 elsewhere; never two precisions in one
cache entry or one artifact."""

import pytest
import torch
from hydra.utils import instantiate

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


def test_a_lora_student_trains_over_its_base_in_bf16_and_a_full_one_in_fp32(cpu, cfg_factory):
    cpu(AMX)
    lora = cfg_factory("student=smollm2_lora", config_name="train")
    assert precision.training_dtype(lora.student, lora.trainer) == "bfloat16"
    full = cfg_factory("student=tiny_llama", config_name="train")
    assert precision.training_dtype(full.student, full.trainer) == "float32"
    fp32 = cfg_factory("student=smollm2_lora", "precision=fp32", config_name="train")
    assert precision.training_dtype(fp32.student, fp32.trainer) == "float32"
    # the dtype it trains in names the KD student: bf16 and fp32 bases never share one
    held_fp32 = cfg_factory("student=smollm2_lora", "trainer.precision=bf16-mixed",
                            "student.dtype=fp32", config_name="train")  # fmt: skip
    assert artifact(held_fp32, "distill").key != artifact(lora, "distill").key


def test_under_autocast_only_the_fp32_adapters_learn_over_the_bf16_base(cfg_factory):
    lora = "+student.lora={r: 4, target_modules: [q_proj, v_proj], task_type: CAUSAL_LM}"
    cfg = cfg_factory("student=tiny_llama", lora, config_name="train")
    model = instantiate(cfg.student, dtype="bfloat16").model
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and p.dtype == torch.float32 for n, p in trained.items())
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in trained.values()]
    assert all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
