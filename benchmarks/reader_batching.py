"""Local reader throughput: batched, length-sorted generation vs one prompt at a time.

    python benchmarks/reader_batching.py [--prompts 32] [--batch-size 8]

Same prompts (the standard-prompting prompts of synthetic examples), same model, one process;
prints prompts/s of each and their ratio. No cache, so both really generate.
"""

import argparse
import time

from hydra import compose, initialize
from hydra.utils import instantiate

import lmcot  # noqa: F401  (config resolvers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("eval", overrides=[f"data.limit={args.prompts}", "reader.cache=null"])
    examples = instantiate(cfg.data)
    prompt = instantiate(cfg.prompts.standard)
    prompts = [prompt.render(ex) for ex in examples]
    reader = instantiate(cfg.reader)
    reader.generate(prompts[:2], prompt.params)  # load the model and warm up outside the timing

    rates = {}
    for batch_size in (args.batch_size, 1):
        reader.batch_size = batch_size
        start = time.perf_counter()
        reader.generate(prompts, prompt.params)
        rates[batch_size] = len(prompts) / (time.perf_counter() - start)
        print(f"batch_size={batch_size:>2}: {rates[batch_size]:.2f} prompts/s")
    print(f"batched / one-at-a-time throughput: {rates[args.batch_size] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
