"""`lmcot.memory`: released and large freed blocks go back to the OS (glibc Linux)."""

import os
import subprocess
import sys

import pytest

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
