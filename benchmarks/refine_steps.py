"""Our PPO step against our GRPO step, and refine's peak memory with either reference.

    python benchmarks/refine_steps.py [--steps 4] [--student S] [--lora-student S]

Step time: the same student (``--student``, fp32 CPU), 16 rationales of 32 new tokens per step
(PPO: 16 questions, its default 2 epochs x minibatches of 4; GRPO: 2 questions x 8, one update),
one warm-up step then ``steps`` timed ones, in this process one after the other.

Memory: a LoRA student (``--lora-student``) refines a few steps in its own subprocess, once with
the reference the LoRA-disabled policy (what ``RefineModule`` does) and once with a full frozen
copy, each printing its peak RSS (``ru_maxrss``); prints both and the ratio.
"""

import argparse
import copy
import json
import resource
import subprocess
import sys
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize
from hydra.utils import instantiate

import lmcot  # noqa: F401  (config resolvers)
from lmcot.data import synthetic
from lmcot.prompts import FewShotPrompt
from lmcot.refine import RefineModule, Rollouts, ShapedReward, dataloaders
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
        instantiate(cfg.student),
        ShapedReward(RewardRegistry({"task": uppercase_share})),
        algorithm,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-5),
        rationale_prompt=PROMPT,
        answer_prompt=PROMPT,
        train_examples=synthetic.load(split="train", num_train=64),
        rollouts=Rollouts(questions, max_new_tokens, temperature=1.0),
        log_table_every=0,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--student", default="tiny_llama")
    parser.add_argument("--lora-student", default="smollm2_lora")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return peak_rss(args.lora_student, args.child, args.steps)

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
