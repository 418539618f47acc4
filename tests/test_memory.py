"""`lmcot.memory`: released and large freed blocks go back to the OS (glibc Linux)."""

import os
import subprocess
import sys

import pytest
import torch

from lmcot import memory


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(memory._glibc("malloc_trim") is None or not os.path.exists("/proc/self/statm"),
                    reason="needs glibc's malloc_trim and /proc")  # fmt: skip
def test_release_returns_a_fragmented_heap_to_the_os():
    # 200 MB in small blocks with one in 64 kept alive: free() alone cannot shrink the heap
    # (every page range has a live block above it); only malloc_trim gives the holes back
    blocks = [bytearray(4000) for _ in range(50_000)]
    kept = blocks[::64]
    del blocks
    before = rss()
    memory.release()
    assert before - rss() > 100 * 2**20, (before, rss())
    assert len(kept) == 782


# freed 8 MiB tensors with small live ones between them: glibc's dynamic threshold (raised to
# 16 MiB by the first free) serves them from the heap, whose holes stay resident; a fixed 1 MiB
# threshold maps each on its own and unmaps it when freed
FRAGMENTING = """
import os, sys, torch
from lmcot import memory
assert memory.set_mmap_threshold(int(sys.argv[1]) or None) == bool(int(sys.argv[1]))
first = torch.ones(16 << 20, dtype=torch.uint8)
del first
blocks, kept = [], []
for _ in range(40):
    blocks.append(torch.ones(8 << 20, dtype=torch.uint8))
    kept.append(torch.ones(4096, dtype=torch.uint8))
del blocks
with open("/proc/self/statm") as f:
    print(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
"""


@pytest.mark.skipif(memory._glibc("mallopt") is None or not os.path.exists("/proc/self/statm"),
                    reason="needs glibc's mallopt and /proc")  # fmt: skip
def test_a_fixed_mmap_threshold_returns_freed_tensors_to_the_os():
    def rss_after(threshold: int) -> int:
        run = [sys.executable, "-c", FRAGMENTING, str(threshold)]
        return int(subprocess.run(run, check=True, capture_output=True, text=True).stdout)

    dynamic, fixed = rss_after(0), rss_after(1 << 20)
    assert dynamic - fixed > 200 * 2**20, (dynamic, fixed)


# a 4 MiB tensor made and freed again and again (a decoding step's logits, a layer's
# activations): below a 16 MiB threshold it comes from the heap and is reused; at 1 MiB each
# is a fresh mapping whose pages fault in again (the first few may fault either way, depending
# on the heap's state)
REFAULTING = """
import resource, sys, torch
from lmcot import memory
assert memory.set_mmap_threshold(int(sys.argv[1]))
x = torch.ones(4 << 20, dtype=torch.uint8)
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    x = torch.ones(4 << 20, dtype=torch.uint8)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(memory._glibc("mallopt") is None, reason="needs glibc's mallopt")
def test_below_the_threshold_a_freed_tensor_is_not_faulted_in_again():
    def faults(threshold: int) -> int:
        run = [sys.executable, "-c", REFAULTING, str(threshold)]
        return int(subprocess.run(run, check=True, capture_output=True, text=True).stdout)

    pages = 100 * (4 << 20) // os.sysconf("SC_PAGE_SIZE")  # 100 fresh mappings' pages
    assert faults(1 << 20) > pages // 2, faults(1 << 20)  # mapped afresh each time
    assert faults(16 << 20) < pages // 4, faults(16 << 20)


def test_the_trim_threshold_rises_with_the_mmap_threshold(monkeypatch):
    # glibc's dynamic rule keeps the trim at twice the mmap threshold; a fixed mmap threshold
    # turns the rule off and leaves the trim at 128 KiB, so the heap's freed top would be
    # returned and faulted in again (refine's update: 2.6 against 2.2 s, docs/performance.md)
    calls = []
    monkeypatch.setattr(memory, "_glibc", lambda name: lambda *args: calls.append(args) or 1)
    assert memory.set_mmap_threshold(16 << 20)
    assert calls == [(memory.M_MMAP_THRESHOLD, 16 << 20), (memory.M_TRIM_THRESHOLD, 32 << 20)]


def test_train_releases_memory_after_every_stage(monkeypatch):
    import train

    calls = []
    monkeypatch.setattr(train.preflight, "check", lambda cfg, stages: None)
    monkeypatch.setattr(train.memory, "release", lambda: calls.append("release"))

    def stage(name):
        return lambda cfg: calls.append(name) or {}

    monkeypatch.setattr(train, "STAGES", {name: stage(name) for name in ("teacher", "distill")})
    train.train(type("Cfg", (), {"stages": ["teacher", "distill"]})())
    assert calls == ["teacher", "release", "distill", "release"]


def test_every_task_fixes_the_threshold_and_no_job_is_named_by_it(cfg_factory, monkeypatch):
    from lmcot import tasks
    from lmcot.artifacts import job_key

    calls = []
    monkeypatch.setattr(tasks.memory, "set_mmap_threshold", calls.append)
    cfg = cfg_factory(config_name="train")
    assert tasks.task_wrapper(lambda cfg: {"done": 1.0})(cfg) == {"done": 1.0}
    off = cfg_factory("malloc_mmap_threshold=null", config_name="train")
    tasks.task_wrapper(lambda cfg: {})(off)
    assert calls == [cfg.malloc_mmap_threshold, None] and cfg.malloc_mmap_threshold > 0
    assert job_key(off) == job_key(cfg)  # how memory is allocated changes no result


def tiny_lora_llama(**config):
    """A tiny Llama with LoRA adapters on q_proj (``config``: LlamaConfig overrides)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
                            "num_hidden_layers": 3, "num_attention_heads": 4,
                            "num_key_value_heads": 2, **config})  # fmt: skip
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj"]))


def lora_grads(checkpointed: bool, eval_mode: bool, bf16: bool):
    """LoRA gradients of one forward and backward of a tiny Llama, and the bytes autograd
    saved for the backward."""
    torch.manual_seed(0)
    model = tiny_lora_llama()
    if checkpointed:
        memory.checkpoint_layers(model)
    model.train(not eval_mode)
    if checkpointed and eval_mode:
        memory.recompute_in_eval(model)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    saved = []
    with (torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.nbytes) or t,
                                                   lambda t: t),
          torch.autocast("cpu", torch.bfloat16, enabled=bf16)):  # fmt: skip
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return grads, sum(saved)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("eval_mode", [False, True], ids=["train", "eval"])
def test_checkpointed_layers_give_the_same_gradients_holding_less(bf16, eval_mode):
    plain, plain_saved = lora_grads(False, eval_mode, bf16)
    checkpointed, saved = lora_grads(True, eval_mode, bf16)
    assert plain.keys() == checkpointed.keys() and plain
    assert all(torch.equal(plain[k], checkpointed[k]) for k in plain)
    assert saved < plain_saved / 3, (saved, plain_saved)


def test_a_model_in_eval_mode_recomputes_only_with_its_layers_marked():
    model = tiny_lora_llama(num_hidden_layers=2, attention_dropout=0.5)
    memory.checkpoint_layers(model)
    model.eval()
    layers = model.base_model.model.model.layers
    assert not any(layer.training for layer in layers)  # eval() alone: nothing is recomputed
    memory.recompute_in_eval(model)
    assert all(layer.training for layer in layers)
    # what the layers hold (attention with its dropout) stays in eval mode
    assert not any(m.training for layer in layers for m in layer.modules() if m is not layer)
