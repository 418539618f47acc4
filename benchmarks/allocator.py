"""glibc's mmap threshold against time and memory of a distillation step, a refine rollout and
a refine update, side by side.

    python benchmarks/allocator.py [--steps 6] [--thresholds 0 1048576 4194304 16777216]
                                   [--workloads distill rollout update]

glibc serves an allocation below its mmap threshold from the heap, whose freed holes between
live blocks stay resident; the threshold starts at 128 KiB and rises (to 32 MiB at most) each
time a larger mmapped block is freed, so after the first large tensor is freed most of a step's
tensors come from the heap. A fixed threshold (``lmcot.memory.set_mmap_threshold``) gives every
large tensor its own mapping, returned to the OS when freed, at the cost of page faults on the
next allocation. Each workload and setting runs in its own process (0: glibc's dynamic default),
in the order given, twice (ABAB, so a load change hits all alike), and is timed ``--steps``
times after a warm-up, with the default student (SmolLM2-135M, bf16 base, fp32 LoRA adapters,
bf16 autocast):

- ``distill``: one LoRA step, 4 x 217 tokens, AdamW;
- ``rollout``: refine_dev's rollout, 4 training questions x 8 rationales of at most 64 tokens
  at temperature 0.7 (each question's prompt prefilled once), the same draws every time;
- ``update``: one minibatch of refine_dev's update, 2 questions x 8 completions of 64 tokens
  after prompts of 300, the question's prompt computed once (``lmcot.lm.grouped``), layers
  recomputed in the backward, log-probs in fp32, backward.

Prints, per workload, the median seconds, the ratio to the first threshold given and the
process's peak RSS.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from hydra.utils import instantiate


def distill_step(cfg, student):
    model = student.model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(model.config.vocab_size, (4, 217), generator=g)

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def rollout(cfg, student):
    from lmcot.data import synthetic
    from lmcot.lm.base import GenerationParams
    from lmcot.lm.sampling import seeded
    from lmcot.prompts import fit_prompts, token_counter

    student.model.eval()
    prompt = instantiate(cfg.prompts.rationale)
    examples = synthetic.load(split="train", num_train=4)
    prompts, _ = fit_prompts(prompt, examples, token_counter(student))
    params = GenerationParams(**{**prompt.generation, "max_new_tokens": 64, "temperature": 0.7})

    def step():
        with seeded(0), torch.autocast("cpu", torch.bfloat16):
            student.rollout(prompts, params, n=8)

    return step


def update(cfg, student):
    from lmcot import memory, rl
    from lmcot.lm import grouped

    model = student.model.eval()
    memory.checkpoint_layers(model)
    memory.recompute_in_eval(model)
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(model.config.vocab_size, (2, 300), generator=g)
    completion_ids = torch.randint(model.config.vocab_size, (16, 64), generator=g)

    def step():
        with torch.autocast("cpu", torch.bfloat16):
            logits, _ = grouped.completion_logits(model, prompt_ids, torch.ones_like(prompt_ids),
                                                  completion_ids)  # fmt: skip
            logp = rl.selective_logprobs(logits.float() / 0.7, completion_ids)
        logp.mean().backward()
        model.zero_grad(set_to_none=True)

    return step


WORKLOADS = {"distill": distill_step, "rollout": rollout, "update": update}


def child(workload: str, threshold: int, steps: int) -> dict:
    from hydra import compose, initialize

    import lmcot  # noqa: F401  (config resolvers)
    from lmcot import memory

    if threshold:
        memory.set_mmap_threshold(threshold)
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", overrides=["precision=bf16"])
    step = WORKLOADS[workload](cfg, instantiate(cfg.student, dtype="bfloat16"))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": statistics.median(times[1:]), "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--thresholds", type=int, nargs="+",
                        default=[0, 1 << 20, 4 << 20, 16 << 20])  # fmt: skip
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.steps)))
        return
    for workload in args.workloads:
        runs: dict[int, list[dict]] = {t: [] for t in args.thresholds}
        for _ in range(2):
            for threshold in args.thresholds:
                run = [sys.executable, __file__, "--child", workload, str(threshold),
                       "--steps", str(args.steps)]  # fmt: skip
                out = subprocess.run(run, check=True, capture_output=True, text=True).stdout
                runs[threshold].append(json.loads(out.strip().splitlines()[-1]))
        base = min(r["seconds"] for r in runs[args.thresholds[0]])
        print(f"{workload}\n{'mmap threshold':>16} {'s/step':>8} {'ratio':>6} {'peak RSS GB':>12}")
        for threshold, results in runs.items():
            seconds = min(r["seconds"] for r in results)
            peak = max(r["peak_rss"] for r in results) / 1e9
            label = "glibc dynamic" if threshold == 0 else f"{threshold // 1024} KiB"
            print(f"{label:>16} {seconds:8.2f} {seconds / base:6.2f} {peak:12.2f}", flush=True)


if __name__ == "__main__":
    main()
