"""Our GRPO step against TRL's ``GRPOTrainer`` on the same model, prompts and reward.

    python benchmarks/refine_vs_trl.py [--steps 5] [--group 8] [--max-new-tokens 32]
                                       [--prompt context|short]

Both train the tiny random Llama of ``conf/student/tiny_llama.yaml`` (SmolLM2's tokenizer,
fp32, CPU, no gradient checkpointing) on the same prompts (``context``: the student's own
rationale prompt, question and paragraphs, ~150-190 tokens, about 5x the completions as in a
real refinement; ``short``: the question alone, ~15 tokens), 2 questions x ``group``
completions of ``max_new_tokens`` tokens per step (no stop string; a random model all but
never samples EOS), one update per rollout, beta 0.04 (a frozen reference copy in both), the same
reward function (share of upper-case characters). Each runs one warm-up step, then
``steps`` timed steps in this process, one after the other. Prints completions per second of
each and the ratio.
"""

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from datasets import Dataset
from hydra import compose, initialize
from hydra.utils import instantiate
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

import lmcot  # noqa: F401  (config resolvers)
from lmcot.algorithms import GRPO
from lmcot.data import synthetic
from lmcot.prompts import FewShotPrompt
from lmcot.refine import Logs, Policy, RefineModule, Rollouts, ShapedReward, Updates, dataloaders
from lmcot.rewards.registry import RewardRegistry
from lmcot.rl import FixedKLController

SHORT = FewShotPrompt("bench", "Write a rationale.", "Question: {question}\nRationale:",
                      " {rationale}")  # fmt: skip
LR, BETA, QUESTIONS = 1e-5, 0.04, 2


def uppercase_share(prompts, completions, **_):
    return [sum(c.isupper() for c in t) / max(1, len(t.replace(" ", ""))) for t in completions]


def config():
    with initialize(version_base="1.3", config_path="../conf"):
        return compose("train", overrides=["student=tiny_llama"])


def student():
    return instantiate(config().student)


class StepClock:
    """Wall-clock time at the end of every training step."""

    def __init__(self):
        self.ends = [time.perf_counter()]

    def tick(self, *args, **kwargs):
        self.ends.append(time.perf_counter())

    def per_second(self, completions_per_step: int) -> float:
        timed = self.ends[2:]  # the first step warms up
        return completions_per_step * (len(timed) - 1) / (timed[-1] - timed[0])


class LightningClock(pl.Callback):
    def __init__(self, clock: StepClock):
        self.on_train_batch_end = clock.tick


class HFClock(TrainerCallback):
    def __init__(self, clock: StepClock):
        self.on_step_end = clock.tick


def ours(examples, prompt, steps: int, group: int, max_new_tokens: int) -> float:
    torch.manual_seed(0)
    module = RefineModule(
        Policy(student()),
        Rollouts(prompt, examples, QUESTIONS, max_new_tokens, temperature=1.0),
        ShapedReward(RewardRegistry({"task": uppercase_share})),
        GRPO(FixedKLController(BETA), group_size=group, minibatch_size=QUESTIONS * group),
        Updates(lambda params: torch.optim.AdamW(params, lr=LR)),
        logs=Logs(table_every=0),
    )
    clock = StepClock()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         callbacks=[LightningClock(clock)], enable_checkpointing=False,
                         enable_progress_bar=False)  # fmt: skip
    trainer.fit(module, dataloaders(steps + 2, [])[0])
    return clock.per_second(QUESTIONS * group)


def trl(examples, prompt, steps: int, group: int, max_new_tokens: int) -> float:
    torch.manual_seed(0)
    model = student()
    prompts = [str(prompt.render(ex)) for ex in examples]
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        model.model.save_pretrained(f"{out}/model")  # TRL loads its reference copy from a path
        model.tokenizer.save_pretrained(f"{out}/model")
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=QUESTIONS * group,
            num_generations=group, max_completion_length=max_new_tokens, learning_rate=LR,
            beta=BETA, max_steps=steps + 2, temperature=1.0, top_k=0, top_p=1.0,
            gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
            report_to="none", logging_steps=10_000, save_strategy="no", seed=0,
        )  # fmt: skip
        dataset = Dataset.from_dict({"prompt": prompts})
        trainer = GRPOTrainer(
            f"{out}/model",
            uppercase_share,
            args,
            dataset,
            processing_class=model.tokenizer,
            callbacks=[HFClock(clock)],
        )
        trainer.train()
    return clock.per_second(QUESTIONS * group)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--prompt", choices=["context", "short"], default="context")
    args = parser.parse_args()
    examples = synthetic.load(split="train", num_train=64)
    prompt = SHORT if args.prompt == "short" else instantiate(config().prompts.rationale)
    tokens = student().tokenizer([str(prompt.render(ex)) for ex in examples])["input_ids"]
    run = (examples, prompt, args.steps, args.group, args.max_new_tokens)
    theirs, mine = trl(*run), ours(*run)
    print(f"tiny_llama GRPO, {QUESTIONS} questions x {args.group} completions x "
          f"{args.max_new_tokens} tokens, {args.prompt} prompts of "
          f"{statistics.fmean(map(len, tokens)):.0f} tokens on average, {args.steps} timed "
          "steps, fp32 CPU")  # fmt: skip
    print(f"TRL GRPOTrainer: {theirs:.1f} completions/s")
    print(f"lmcot GRPO:      {mine:.1f} completions/s")
    print(f"ratio (ours / TRL): {mine / theirs:.2f}x")


if __name__ == "__main__":
    main()
