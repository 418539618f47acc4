"""glibc's mmap threshold against time and memory of a distillation step, side by side.

    python benchmarks/allocator.py [--steps 6] [--thresholds 0 131072 1048576 4194304]

glibc serves an allocation below its mmap threshold from the heap, whose freed holes between
live blocks stay resident; the threshold starts at 128 KiB and rises (to 32 MiB at most) each
time a larger mmapped block is freed, so after the first large tensor is freed most of a step's
tensors come from the heap. A fixed threshold (``lmcot.memory.set_mmap_threshold``) gives every
large tensor its own mapping, returned to the OS when freed, at the cost of page faults on the
next allocation. Each setting runs in its own process (0: glibc's dynamic default), in the
order given, twice (ABAB, so a load change hits all alike): one LoRA step of the default
student (SmolLM2-135M, bf16 base, fp32 adapters, bf16 autocast, 4 x 217 tokens, AdamW) is
timed ``--steps`` times after a warm-up. Prints the median seconds per step, its ratio to the
default and the process's peak RSS.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def child(threshold: int, steps: int) -> dict:
    from hydra import compose, initialize
    from hydra.utils import instantiate

    import lmcot  # noqa: F401  (config resolvers)
    from lmcot import memory

    if threshold:
        memory.set_mmap_threshold(threshold)
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", overrides=["precision=bf16"])
    model = instantiate(cfg.student, dtype="bfloat16").model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (4, 217), generator=g)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": statistics.median(times[1:]), "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[0, 131072, 1048576, 4194304])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.steps)))
        return
    runs: dict[int, list[dict]] = {t: [] for t in args.thresholds}
    for _ in range(2):
        for threshold in args.thresholds:
            out = subprocess.run([sys.executable, __file__, "--child", str(threshold),
                                  "--steps", str(args.steps)],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            runs[threshold].append(json.loads(out.strip().splitlines()[-1]))
    base = min(r["seconds"] for r in runs[args.thresholds[0]])
    print(f"{'mmap threshold':>16} {'s/step':>8} {'ratio':>6} {'peak RSS GB':>12}")
    for threshold, results in runs.items():
        seconds = min(r["seconds"] for r in results)
        peak = max(r["peak_rss"] for r in results) / 1e9
        label = "glibc dynamic" if threshold == 0 else f"{threshold // 1024} KiB"
        print(f"{label:>16} {seconds:8.2f} {seconds / base:6.2f} {peak:12.2f}")


if __name__ == "__main__":
    main()
