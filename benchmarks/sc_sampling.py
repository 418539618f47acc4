"""Self-consistency sampling: k rationales per question in one batched call vs k separate calls.

    python benchmarks/sc_sampling.py [--questions 8] [--k 5]

Same student (the offline SmolLM2 default, without adapters), same prompts, one process, no
cache. The batched path is what ``decoding=sc`` does (``num_return_sequences=k``); the loop is
the naive alternative of k generate calls with different seeds. Prints both times and the ratio.
"""

import argparse
import time

from hydra import compose, initialize
from hydra.utils import instantiate

import lmcot  # noqa: F401  (config resolvers)
from lmcot.lm.base import GenerationParams


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", overrides=[f"data.limit={args.questions}", "student.lora=null"])
    prompt = instantiate(cfg.prompts.rationale)
    prompts = [prompt.render(ex) for ex in instantiate(cfg.data)]
    student = instantiate(cfg.student)
    sampled = dict(temperature=0.7, top_p=0.95, max_new_tokens=48, stop=("\n",))
    student.generate(prompts[:1], GenerationParams(**sampled))  # load + warm up

    start = time.perf_counter()
    student.generate(prompts, GenerationParams(**sampled), n=args.k)
    batched = time.perf_counter() - start

    start = time.perf_counter()
    for seed in range(args.k):
        student.generate(prompts, GenerationParams(**sampled, seed=seed))
    loop = time.perf_counter() - start

    print(f"{args.questions} questions x k={args.k} rationales")
    print(f"batched (n={args.k} in one call): {batched:.1f} s")
    print(f"loop of {args.k} calls:            {loop:.1f} s")
    print(f"loop / batched: {loop / batched:.2f}x")


if __name__ == "__main__":
    main()
