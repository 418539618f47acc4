"""The RL update's forward and backward, three ways, side by side in one process.

    python benchmarks/grouped_forward.py [--questions 4] [--group 8] [--tokens 48]
                                         [--repeats 2] [--threads N] [--no-checkpointing]
                                         [--paths rows masked parts]

The offline default student (``cfg.student``: SmolLM2-135M-Instruct with fresh LoRA adapters,
bf16 where the CPU has it) as refine holds it (eval mode, activation checkpointing on unless
``--no-checkpointing``, the allocator ``train.py`` runs with) computes the log-probs of
``--group`` completions of ``--tokens`` random tokens for each of ``--questions`` rationale
prompts drawn as a refine_dev step draws them (seeded, from its 400 synthetic training questions:
124-194 tokens, left-padded to the longest) and back-propagates their sum:

- ``rows``: every completion run whole after its prompt (``shared=False``);
- ``masked``: one sequence a question, ``prompt | c1 | ... | cG``, attention over the whole
  sequence under the grouped mask (:func:`lmcot.lm.grouped.grouped_layout`);
- ``parts``: the same sequence, attention by parts (:func:`lmcot.lm.grouped.grouped_attention`,
  what refine runs): the prompt over itself, each completion over its prompt's keys and its own.

Paths are taken in turn, each the best of ``--repeats`` after one untimed call, so load hits
them alike. The log-probs of every path are compared with the first's.
"""

import argparse
import copy
import os
import time

import torch
from hydra import compose, initialize
from hydra.utils import instantiate

from lmcot import memory
from lmcot.data import synthetic
from lmcot.lm import grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--paths", nargs="+", default=["rows", "masked", "parts"],
                        choices=["rows", "masked", "parts"])  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train")
    memory.set_mmap_threshold(cfg.malloc_mmap_threshold)
    student = instantiate(cfg.student)
    masked = student.model.eval()
    if not args.no_checkpointing:
        memory.checkpoint_layers(masked)
    parts = copy.deepcopy(masked)
    grouped.use_grouped_attention(parts)
    for model in (masked, parts):
        memory.recompute_in_eval(model)
    prompt = instantiate(cfg.prompts.rationale)
    examples = synthetic.load(split="train", num_train=400)
    drawn = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0))
    examples = [examples[i] for i in drawn[: args.questions]]
    texts = [student.format(prompt.render(ex)) for ex in examples]
    batch = student.tokenizer(texts, return_tensors="pt", padding=True)
    g = torch.Generator().manual_seed(0)
    completions = torch.randint(100, 40_000, (args.questions * args.group, args.tokens),
                                generator=g)  # fmt: skip

    def step(model, shared: bool):
        model.zero_grad(set_to_none=True)
        logits, _ = grouped.completion_logits(model, batch["input_ids"], batch["attention_mask"],
                                              completions, shared=shared)  # fmt: skip
        logp = logits.float().log_softmax(-1).gather(-1, completions[..., None])
        logp.sum().backward()
        return logp.detach()

    ways = {"rows": (masked, False), "masked": (masked, True), "parts": (parts, True)}
    paths = {name: ways[name] for name in args.paths}
    first = args.paths[0]
    logps = {name: step(*how) for name, how in paths.items()}  # untimed: warm-up and check
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, how in paths.items():
            start = time.perf_counter()
            step(*how)
            times[name].append(time.perf_counter() - start)
    prompt_len = batch["input_ids"].shape[1]
    print(f"{args.questions} questions x {args.group} completions x {args.tokens} tokens after "
          f"prompts of {prompt_len} tokens; {torch.get_num_threads()} threads; "
          f"{masked.dtype}; checkpointing {'off' if args.no_checkpointing else 'on'}; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    for name in paths:
        diff = (logps[name] - logps[first]).abs().max().item()
        best = min(times[name])
        print(
            f"{name:>7}: {best:6.2f} s  ({min(times[first]) / best:.2f}x {first})  "
            f"max |log-prob - {first}'s| {diff:.1e}"
        )


if __name__ == "__main__":
    main()
