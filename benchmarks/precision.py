"""fp32 vs bf16 on this machine's CPU (or GPU), side by side, on the offline SmolLM2-135M.

    python benchmarks/precision.py [--repeats 3]

Times the three hot operations of the default run in fp32, under bf16 autocast and with bf16
weights, interleaved (fp32, autocast, weights, fp32, ...) so a load change hits all alike, and
prints the best time of each and its ratio to fp32: a distillation micro-batch (forward +
backward, 4 x 217 tokens), a reader prefill (8 x 430 tokens) and greedy decoding (16 prompts x
32 new tokens). Also says whether ``precision=auto`` picks bf16 here (lmcot.precision).
"""

import argparse
import copy
import time

import torch
from hydra import compose, initialize
from hydra.utils import instantiate

import lmcot  # noqa: F401  (config resolvers)
from lmcot.precision import bf16_supported


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("eval", overrides=["reader.cache=null", "precision=fp32"])
    lm = instantiate(cfg.reader)
    fp32 = lm.model
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    device = fp32.device
    vocab = fp32.config.vocab_size
    g = torch.Generator().manual_seed(0)
    train_ids = torch.randint(vocab, (4, 217), generator=g).to(device)
    prefill_ids = torch.randint(vocab, (8, 430), generator=g).to(device)
    prompts = torch.randint(vocab, (16, 200), generator=g).to(device)

    def step(model, autocast):
        def run():
            with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                loss = model(input_ids=train_ids, labels=train_ids).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    def prefill(model, autocast):
        def run():
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                        enabled=autocast):  # fmt: skip
                model(input_ids=prefill_ids, logits_to_keep=1)

        return run

    def decode(model, autocast):
        def run():
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                        enabled=autocast):  # fmt: skip
                model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                               max_new_tokens=32, min_new_tokens=32, do_sample=False,
                               pad_token_id=lm.tokenizer.pad_token_id)  # fmt: skip

        return run

    variants = {"fp32": (fp32, False), "bf16 autocast": (fp32, True),
                "bf16 weights": (bf16, False)}  # fmt: skip
    ops = {"forward + backward 4 x 217": step, "prefill 8 x 430": prefill,
           "greedy 16 x 32 new tokens": decode}  # fmt: skip
    print(f"device {device}; precision=auto picks bf16 here: {bf16_supported(device.type)}")
    for op, make in ops.items():
        runs = {name: make(model, autocast) for name, (model, autocast) in variants.items()}
        for run in runs.values():
            run()  # warm-up: oneDNN picks its kernels on the first call of a shape
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):
            for name, run in runs.items():
                best[name] = min(best[name], timed(run))
        cells = ", ".join(
            f"{name} {t:.2f} s ({best['fp32'] / t:.2f}x)" for name, t in best.items()
        )
        print(f"{op}: {cells}")


if __name__ == "__main__":
    main()
