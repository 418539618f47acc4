"""Top-p over the top-k logits (``lmcot.lm.sampling.Nucleus``) vs transformers' warpers.

    python benchmarks/nucleus.py [--rows 80] [--k 5] [--questions 16]

Side by side in one process: (1) the logits step alone, on random logits the size of
SmolLM2's vocabulary; (2) one self-consistency ``generate`` of the offline SmolLM2 student
(16 questions x k samples = 80 rows, 48 new tokens), through ``Nucleus`` and through
``generate``'s own temperature/top-k/top-p. Both draw the same samples (same seed); the
script checks that and prints times and ratios.
"""

import argparse
import time

import torch
from hydra import compose, initialize
from hydra.utils import instantiate
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import lmcot  # noqa: F401  (config resolvers)
from lmcot.lm.base import GenerationParams
from lmcot.lm.sampling import Nucleus


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - start) / repeat, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=80)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--questions", type=int, default=16)
    args = parser.parse_args()

    scores, ids = torch.randn(args.rows, 49152), torch.zeros(args.rows, 1, dtype=torch.long)
    warpers = LogitsProcessorList(
        [TemperatureLogitsWarper(0.7), TopKLogitsWarper(50), TopPLogitsWarper(0.95)]
    )
    theirs, _ = timed(lambda: warpers(ids, scores.clone()), 10)
    ours, _ = timed(lambda: Nucleus(0.7, 50, 0.95)(ids, scores.clone()), 10)
    print(f"logits step, {args.rows} rows x 49,152: warpers {theirs * 1e3:.0f} ms, "
          f"Nucleus {ours * 1e3:.1f} ms, ratio {theirs / ours:.0f}x")  # fmt: skip

    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", overrides=[f"data.limit={args.questions}", "student.lora=null"])
    prompt = instantiate(cfg.prompts.rationale)
    student = instantiate(cfg.student)
    batch = student.tokenizer(
        [prompt.render(ex) for ex in instantiate(cfg.data)], return_tensors="pt", padding=True
    )
    params = GenerationParams(max_new_tokens=48, temperature=0.7, top_p=0.95, seed=0)
    common = dict(max_new_tokens=48, min_new_tokens=48, num_return_sequences=args.k,
                  pad_token_id=student.tokenizer.pad_token_id)  # fmt: skip

    def generate(**sampling):
        torch.manual_seed(0)
        with torch.inference_mode():
            return student.model.generate(**batch, **common, **sampling)

    generate(**student._sampling(params))  # warm-up
    plain, a = timed(lambda: generate(do_sample=True, temperature=0.7, top_p=0.95))
    fast, b = timed(lambda: generate(**student._sampling(params)))
    print(f"SC generate, {args.questions} questions x {args.k} samples x 48 tokens: "
          f"warpers {plain:.1f} s, Nucleus {fast:.1f} s, ratio {plain / fast:.2f}x, "
          f"same samples: {torch.equal(a, b)}")  # fmt: skip


if __name__ == "__main__":
    main()
