"""Reader throughput with and without prefix reuse, on the same prompts, same outputs.

    python benchmarks/reader_prefix.py [--questions 16] [--samples 3] [--max-new-tokens N]

The offline SmolLM2 reader answers the prompts every evaluation sends it: standard, original
CoT and LM-guided prompts of synthetic questions, plus the k guided prompts of self-consistency
(k rationale variants per question, sharing all but the rationale). Rationales come from the
supporting-facts teacher. Both paths run in one process with no cache; greedy outputs must be
identical. Prints prompts/s of each path, prefill tokens, and the ratio.
"""

import argparse
import time

from hydra import compose, initialize
from hydra.utils import instantiate

import lmcot  # noqa: F401  (config resolvers)
from lmcot.lm.base import GenerationParams
from lmcot.teacher import SupportingFactsTeacher


def sc_rationales(example) -> list[str]:
    """k-style variants of one question's rationale: full, without conclusion, conclusion only."""
    teacher = SupportingFactsTeacher()
    bare = SupportingFactsTeacher(conclusion=None).rationale(example)
    return [teacher.rationale(example), bare, f"So the answer is {example.answer}."]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--samples", type=int, default=3, help="SC rationales per question")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="cap every generation budget")  # fmt: skip
    args = parser.parse_args()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("eval", overrides=[f"data.limit={args.questions}", "reader.cache=null"])
    examples = instantiate(cfg.data)
    teacher = SupportingFactsTeacher()
    standard, cot, guided = (instantiate(cfg.prompts[k]) for k in ("standard", "cot", "guided"))
    jobs = {  # name -> (prompts, params), the calls an evaluation makes
        "standard": ([standard.render(ex) for ex in examples], standard.params),
        "cot": ([cot.render(ex) for ex in examples], cot.params),
        "guided": (
            [guided.render(ex, rationale=teacher.rationale(ex)) for ex in examples],
            guided.params,
        ),
        "sc": (
            [guided.render(ex, rationale=r) for ex in examples for r in sc_rationales(ex)],
            guided.params,
        ),
    }
    if args.max_new_tokens:
        jobs = {
            name: (prompts, GenerationParams(**{**vars(params),
                                                "max_new_tokens": args.max_new_tokens}))
            for name, (prompts, params) in jobs.items()
        }  # fmt: skip
    reader = instantiate(cfg.reader)
    reader.generate(jobs["standard"][0][:2], jobs["standard"][1])  # load and warm up, untimed

    outputs, seconds, prefill = {}, {}, {}
    for reuse in (True, False):
        reader.prefix_reuse = reuse
        reader.prefill_tokens = 0
        start = time.perf_counter()
        outputs[reuse] = {name: reader.generate(p, params) for name, (p, params) in jobs.items()}
        seconds[reuse] = time.perf_counter() - start
        prefill[reuse] = reader.prefill_tokens
    n = sum(len(p) for p, _ in jobs.values())
    for name in jobs:
        same = outputs[True][name] == outputs[False][name]
        print(f"{name:>8}: {len(jobs[name][0]):>3} prompts, outputs identical: {same}")
    for reuse in (True, False):
        print(f"prefix_reuse={reuse!s:>5}: {n / seconds[reuse]:.2f} prompts/s "
              f"({seconds[reuse]:.1f} s, {prefill[reuse]} prefill tokens)")  # fmt: skip
    print(f"with / without prefix reuse throughput: {seconds[False] / seconds[True]:.2f}x; "
          f"prefill tokens {prefill[True] / prefill[False]:.2f}x")  # fmt: skip
    assert outputs[True] == outputs[False], "prefix reuse changed a greedy output"


if __name__ == "__main__":
    main()
