"""Our PPO step against our GRPO step, refine's peak memory with either reference, and a GRPO
step with each question's prompt computed once against every sample run whole.

    python benchmarks/refine_steps.py [--steps 4] [--student S] [--lora-student S]
    python benchmarks/refine_steps.py --shared-prompt [--rounds 3] [--lora-student S]
        [--malloc-mmap-threshold BYTES] [--today KEY=VALUE ...] [--isolate]

Step time: the same student (``--student``, fp32 CPU), 16 rationales of 32 new tokens per step
(PPO: 16 questions, its default 2 epochs x minibatches of 4; GRPO: 2 questions x 8, one update),
one warm-up step then ``steps`` timed ones, in this process one after the other.

Memory: a LoRA student (``--lora-student``) refines a few steps in its own subprocess, once with
the reference the LoRA-disabled policy (what ``RefineModule`` does) and once with a full frozen
copy, each printing its peak RSS (``ru_maxrss``); prints both and the ratio.

Shared prompt (``--shared-prompt``): the offline default's student and reward, GRPO with 8
questions x 8 samples of 48 new tokens, bf16 where the CPU has it. One module samples with
``generate``'s own repetition (each prompt prefilled once per sample) and its own sampling
(``torch.multinomial``), and runs every sample whole in its forwards (``shared_prompt=False``),
as the code did before; the other prefills once, draws by inverse CDF and runs
``prompt | c1 | ... | c8`` per question. They take one step each in turn, the
first round a warm-up, so load on the machine hits both alike; prints samples per second of
each, where each step's time went, and the ratio. Both run at the allocator setting
``train.py``'s default runs with, or ``--malloc-mmap-threshold`` (``experiment=refine_dev``
runs at 16777216). ``--today`` adds config overrides to the shared-prompt module alone (a lever
measured against the same "before", e.g. ``refine.activation_checkpointing=false``).
``--isolate`` runs each path in its own process instead, one after the other (each with its own
warm-up round): nothing of one path's heap, threads or reader can slow the other, at the price
of load that changes between them. Either way it prints the mean tokens of a completion, so
that a difference in the rollout or reward time can be told from a difference in the samples,
and each part's compute bound: the matmul FLOPs of that path's warm-up step (untimed;
counted by torch's ``FlopCounterMode``) at this machine's matmul rate (the GEMM probe of
``default_run.py``). The reader and the reward's scorers run uncached: the draws are seeded, so
an earlier run's cache would already hold this run's samples.
"""

import argparse
import copy
import functools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import pytorch_lightning as pl
import torch
from default_run import matmul_peak  # benchmarks/default_run.py, beside this script
from hydra import compose, initialize
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

import lmcot  # noqa: F401  (config resolvers)
from lmcot import memory
from lmcot.data import synthetic
from lmcot.lm.hf import HFModel
from lmcot.precision import training_dtype, training_precision
from lmcot.prompts import FewShotPrompt
from lmcot.refine import Logs, Policy, RefineModule, Rollouts, ShapedReward, Updates, dataloaders
from lmcot.rewards.registry import RewardRegistry

PROMPT = FewShotPrompt("bench", "Write a rationale.", "Question: {question}\nRationale:",
                       " {rationale}")  # fmt: skip


def uppercase_share(prompts, completions, **_):
    return [sum(c.isupper() for c in t) / max(1, len(t.replace(" ", ""))) for t in completions]


def module(student: str, algo: str, questions: int, max_new_tokens: int) -> RefineModule:
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", overrides=[f"student={student}", f"refine={algo}"])
    torch.manual_seed(0)
    algorithm = instantiate(cfg.refine.algorithm)
    if algo == "grpo":
        algorithm.group_size, algorithm.minibatch_size = 8, 16
    return RefineModule(
        Policy(instantiate(cfg.student)),
        Rollouts(PROMPT, synthetic.load(split="train", num_train=64), questions, max_new_tokens),
        ShapedReward(RewardRegistry({"task": uppercase_share})),
        algorithm,
        Updates(lambda params: torch.optim.AdamW(params, lr=1e-5)),
        logs=Logs(table_every=0),
    )


def seconds_per_step(refine: RefineModule, steps: int) -> float:
    ends = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *args, **kwargs):
            ends.append(time.perf_counter())

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, callbacks=[Clock()],
                         enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
    trainer.fit(refine, dataloaders(steps + 1, [])[0])
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def peak_rss(student: str, reference: str, steps: int) -> None:
    """Child process: refine a LoRA student a few steps and print its peak RSS in MiB."""
    refine = module(student, "grpo", 2, 32)
    if reference == "copy":  # what a student without LoRA gets: a second, frozen model
        base = refine.model.get_base_model()
        refine.reference = copy.deepcopy(base).requires_grad_(False)
    seconds_per_step(refine, steps)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def default_grpo(
    student: str, shared: bool, clock: dict, threshold: int | None, overrides=()
) -> tuple[RefineModule, str]:
    """GRPO 8 x 8 on the offline default's reward and student (with ``overrides``); ``clock``
    sums the seconds of the rollouts and the reward (the rest of a step: forwards, updates)."""
    with initialize(version_base="1.3", config_path="../conf"):
        base = [f"student={student}", "refine=grpo", "refine.algorithm.minibatch_size=16"]
        cfg = compose("train", overrides=[*base, *overrides])
    # the allocator train.py runs with, unless the command line names another (0 included)
    memory.set_mmap_threshold(cfg.malloc_mmap_threshold if threshold is None else threshold)
    r = cfg.refine
    model = instantiate(cfg.student, dtype=training_dtype(cfg.student, cfg.trainer))
    # every step scores anew: the reader and the scorers uncached, since the draws are seeded
    # and an earlier run's cache would hold this run's samples (their reward then costs 0)
    reader = instantiate(cfg.reader, cache=None)
    for scorer in cfg.reward.scorers.values():
        if "cache" in scorer:
            scorer.cache = None
    module = RefineModule(
        Policy(model, r.activation_checkpointing, shared_prompt=shared),
        Rollouts(instantiate(cfg.prompts.rationale), synthetic.load(split="train", num_train=256),
                 batch_size=8, max_new_tokens=48),
        ShapedReward(instantiate(cfg.reward, lm=reader)), instantiate(r.algorithm),
        Updates(instantiate(r.optimizer)), logs=Logs(table_every=0),
    )  # fmt: skip
    if not shared:  # generate's own repetition (each prompt prefilled once per sample) and
        # its own sampling (torch.multinomial), as rollouts drew before the inverse-CDF draw
        own = {"do_sample": True, "top_k": 0, "temperature": r.temperature,
               "logits_processor": None}  # fmt: skip
        model._sample = functools.partial(HFModel._sample, model, **own)
    model.rollout = counted(timed(model.rollout, clock, "rollout"), clock)  # no validation here
    registry = module.reward.registry
    registry.score = timed(registry.score, clock, "reward")
    return module, training_precision(cfg.trainer)


COUNTING: list[FlopCounterMode] = []  # the counter of the step :func:`counted_step` runs


def timed(fn, clock: dict, part: str):
    """``fn`` adding its seconds to ``clock[part]`` (and its FLOPs, in a counted step)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        flops = COUNTING[0].get_total_flops() if COUNTING else 0
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[part] += time.perf_counter() - start
            if COUNTING:
                clock[f"{part} flops"] += COUNTING[0].get_total_flops() - flops

    return call


def counted(rollout, clock: dict):
    """``rollout`` that adds its completions and their tokens to ``clock``."""

    @functools.wraps(rollout)
    def call(*args, **kwargs):
        out = rollout(*args, **kwargs)
        clock["completions"] += len(out["completion_mask"])
        clock["tokens"] += out["completion_mask"].sum().item()
        return out

    return call


def one_step(module: RefineModule, precision: str) -> None:
    # one RL step a fit: max_steps would count optimiser steps (several an RL step)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         precision=precision)  # fmt: skip
    trainer.fit(module, dataloaders(1, [])[0])


def counted_step(module: RefineModule, precision: str, clock: dict) -> dict[str, float]:
    """One step, and the FLOPs of its rollout, its reward and the rest: torch's FlopCounterMode
    counts the matmuls as they run (forward, recomputed forward and backward; the CPU's fused
    attention is not counted). ``clock`` gains the parts' FLOPs besides their seconds."""
    with FlopCounterMode(display=False) as counter:
        COUNTING.append(counter)
        try:
            one_step(module, precision)
        finally:
            COUNTING.pop()
    flops = {part: clock[f"{part} flops"] for part in ("rollout", "reward")}
    flops["forwards + update"] = counter.get_total_flops() - sum(flops.values())
    return flops


def timed_steps(modules: dict, clocks: dict, rounds: int) -> tuple[dict, dict]:
    """Seconds of each step of each module, taken in turn, and the FLOPs of each module's
    step; round 0 warms up (lazy loads, the first ``generate``), is the step whose FLOPs are
    counted, and is neither timed nor counted in ``clocks``."""
    seconds, flops = {path: [] for path in modules}, {}
    for round_ in range(rounds + 1):
        for path, (module, precision) in modules.items():
            if round_ == 0:
                flops[path] = counted_step(module, precision, clocks[path])
                continue
            if round_ == 1:
                clocks[path].clear()
            start = time.perf_counter()
            one_step(module, precision)
            seconds[path].append(time.perf_counter() - start)
    return seconds, flops


def one_path(student: str, shared: bool, rounds: int, threshold: int | None, today=()) -> dict:
    """The steps of one path: seconds, the clock's parts and the precision."""
    clock = defaultdict(float)
    built = default_grpo(student, shared, clock, threshold, today if shared else ())
    seconds, flops = timed_steps({shared: built}, {shared: clock}, rounds)
    return {"seconds": seconds[shared], "clock": dict(clock), "precision": str(built[1]),
            "flops": flops[shared]}  # fmt: skip


def isolated(student: str, shared: bool, rounds: int, threshold: int | None, today=()) -> dict:
    """:func:`one_path` in a process of its own, its result read from its last line."""
    command = [sys.executable, __file__, "--shared-prompt", "--path",
               "shared" if shared else "whole", "--rounds", str(rounds),
               "--lora-student", student, "--today", *today]  # fmt: skip
    if threshold is not None:
        command += ["--malloc-mmap-threshold", str(threshold)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def shared_prompt(student: str, rounds: int, threshold: int | None, today=(),
                  isolate: bool = False) -> None:  # fmt: skip
    if isolate:
        runs = {s: isolated(student, s, rounds, threshold, today) for s in (False, True)}
    else:
        clocks = {shared: defaultdict(float) for shared in (False, True)}
        modules = {s: default_grpo(student, s, clocks[s], threshold, today if s else ())
                   for s in clocks}  # fmt: skip
        seconds, flops = timed_steps(modules, clocks, rounds)
        runs = {s: {"seconds": seconds[s], "clock": clocks[s], "precision": modules[s][1],
                    "flops": flops[s]} for s in clocks}  # fmt: skip
    # the bound: each part's counted FLOPs at the matmul rate of this machine (the GEMM probe)
    bf16 = "bf16" in str(runs[True]["precision"])
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
    samples = 64
    print(f"{student}, GRPO 8 questions x 8 samples x 48 tokens, default reward, "
          f"{runs[True]['precision']}, {rounds} rounds "
          f"({'each path in its own process' if isolate else 'steps taken in turn'}), "
          f"malloc mmap threshold {'train.py default' if threshold is None else threshold}"
          f"{', shared prompt with ' + ' '.join(today) if today else ''}; "
          f"in brackets the part's compute bound (counted FLOPs at the GEMM probe's "
          f"{peak:.0f} GFLOP/s):")  # fmt: skip
    for shared, label in ((False, "whole rows (before)"), (True, "shared prompt")):
        run = runs[shared]
        per_step = statistics.fmean(run["seconds"])
        clock = dict(run["clock"])
        tokens = clock.pop("tokens") / clock.pop("completions")
        parts = {k: v / rounds for k, v in clock.items()}
        parts["forwards + update"] = per_step - sum(parts.values())
        bound = {k: f / peak / 1e9 for k, f in run["flops"].items()}
        parts = ", ".join(f"{k} {v:.1f} s ({bound[k]:.1f} s)" for k, v in parts.items())
        print(f"  {label:20s} {per_step:6.1f} s/step, {samples / per_step:.2f} samples/s "
              f"({parts}; {tokens:.1f} tokens a completion; the whole step "
              f"{per_step / sum(bound.values()):.1f}x its bound)")  # fmt: skip
    ratio = statistics.fmean(runs[False]["seconds"]) / statistics.fmean(runs[True]["seconds"])
    print(f"  ratio: {ratio:.2f}x samples/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--student", default="tiny_llama")
    parser.add_argument("--lora-student", default="smollm2_lora")
    parser.add_argument(
        "--shared-prompt",
        action="store_true",
        help="GRPO 8 x 8 on the default reward: shared prompt vs whole rows",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--malloc-mmap-threshold", type=int, default=None,
                        help="bytes (--shared-prompt); default: train.py's")  # fmt: skip
    parser.add_argument("--today", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of the shared-prompt module")  # fmt: skip
    parser.add_argument("--isolate", action="store_true",
                        help="each path in its own process (--shared-prompt)")  # fmt: skip
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=["whole", "shared"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return peak_rss(args.lora_student, args.child, args.steps)
    if args.path:  # one path of --isolate, in this process: its result as the last line
        run = one_path(args.lora_student, args.path == "shared", args.rounds,
                       args.malloc_mmap_threshold, args.today)  # fmt: skip
        return print(json.dumps(run))
    if args.shared_prompt:
        return shared_prompt(args.lora_student, args.rounds, args.malloc_mmap_threshold,
                             args.today, args.isolate)  # fmt: skip

    ppo = seconds_per_step(module(args.student, "ppo", 16, 32), args.steps)
    grpo = seconds_per_step(module(args.student, "grpo", 2, 32), args.steps)
    print(f"{args.student}, 16 rationales x 32 tokens per step, {args.steps} timed steps:")
    print(f"PPO  {ppo:.2f} s/step (2 epochs x 4 minibatches, value head)")
    print(f"GRPO {grpo:.2f} s/step (one update)")
    print(f"ratio PPO / GRPO: {ppo / grpo:.2f}x")

    rss = {}
    for reference in ("lora_disabled", "copy"):
        out = subprocess.run([sys.executable, __file__, "--child", reference,
                              "--lora-student", args.lora_student, "--steps", "2"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        rss[reference] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
    print(f"{args.lora_student}, GRPO 2 x 8 rationales, peak RSS: LoRA-disabled reference "
          f"{rss['lora_disabled']:.0f} MiB, full copy {rss['copy']:.0f} MiB, "
          f"ratio {rss['copy'] / rss['lora_disabled']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
