"""`lmcot.memory.release` returns freed heap pages to the OS (glibc Linux)."""

import os

import pytest

from lmcot import memory


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(memory._malloc_trim() is None or not os.path.exists("/proc/self/statm"),
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
