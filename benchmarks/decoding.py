"""Decoding near the bound: tokens/s of ``generate`` against what the hardware allows.

    python benchmarks/decoding.py [--rows 1 8 64] [--tokens 48] [--repeats 2]
                                  [--paths dynamic multinomial static lora] [--check-rows 4]
                                  [--threads N]

The offline default's SmolLM2-135M-Instruct, loaded as the project loads it (``conf/train.yaml``
composed with Hydra, ``cfg.reader`` and ``cfg.student`` instantiated; bf16 where the CPU has
it, :mod:`lmcot.precision`), decodes ``--tokens`` sampled tokens (temperature 1, the whole
vocabulary: refine's rollouts, ``CausalLM._sample``, drawn by
:class:`lmcot.lm.sampling.InverseCDFDraw`) for each of ``--rows`` distinct synthetic
rationale prompts, with ``min_new_tokens`` = ``max_new_tokens`` and no stop strings, so every
row decodes every step.

Prefill excluded: each row count's prompts are prefilled once, all but their last token, into
a ``DynamicCache`` (:func:`lmcot.lm.prefix.extend`, as ``CausalLM._sample`` does), and every
timed call starts from a copy of that cache. ``generate`` then runs the last prompt token and
decodes. A step is ``(t(N + 1) - t(1)) / N``: a ``generate`` of N + 1 new tokens minus one of
1 new token, each the best of ``--repeats`` (paths taken in turn, so load hits them alike).
This is what ``generate`` costs per token, its logits processing, sampling, stopping checks
and cache updates included, where a hand loop of single-token forwards would time a bare
forward; the fixed costs of a call (input checks, the first step's mask) cancel.

Threads: torch's own number unless ``--threads``. On a machine shared with other jobs, torch's
parallel regions wait for descheduled threads and a 2-thread step can take tens of times its
idle time; measure on an idle machine, or with ``--threads 1`` beside one other job.

Two bounds, measured in the same run:

- weights read: the bytes of the model's parameters streamed once from memory, the fastest
  of a ``sum()`` over a buffer of that size (far larger than the caches) and a batch-1 matrix-
  vector product over every weight matrix of the model: no decoding step at a small batch can
  be faster, since each reads every weight;
- compute: 2 x parameters FLOPs per token per row at the GEMM probe's rate
  (``benchmarks/default_run.py``'s ``matmul_peak``, in the model's dtype): the floor at many
  rows.

"x the bound" is a step's time over the larger of the two. Printed beside them, each measured
alone and not counted in the bound: the model's matmuls at each row count (``F.linear`` over
every weight matrix), drawing a sample from the whole vocabulary (softmax, then
``torch.multinomial`` or the inverse-CDF draw), and reading the KV cache a step attends to (at
the ``sum()`` rate).

Paths:

- ``dynamic``: today's, ``model.generate`` with the prefilled ``DynamicCache``, each token drawn
  by the inverse-CDF draw (:func:`lmcot.lm.sampling.vocabulary_sampling`);
- ``growing``: the same with the prefill copied into :func:`lmcot.lm.kvcache.growing_cache`,
  whose layers write each step's keys and values into a buffer with room instead of
  concatenating (no copy of the cache per token);
- ``multinomial``: the same with ``generate``'s own sampling (``do_sample``, ``top_k=0``:
  ``torch.multinomial``), what rollouts drew with before;
- ``static``: the same prefill copied into a transformers ``StaticCache`` and ``generate`` with
  a ``compile_config`` (``torch.compile``, inductor, its default mode: ``reduce-overhead``
  means CUDA graphs); on CPU ``generate`` compiles only when the config's
  ``_compile_all_devices`` is set (``GenerationMixin._valid_auto_compile_criteria``). The
  decoding steps run compiled, the first token eager. Compile time (the first call's excess
  over a steady call, per new batch shape) is reported apart: a one-time cost per process;
  inductor's on-disk cache goes to a temporary directory removed at the end (unless
  ``TORCHINDUCTOR_CACHE_DIR`` is set), so it is a cold compile;
- ``lora``: the LoRA student (``cfg.student``, adapters unmerged, as refine samples on every
  token) against a copy with the adapters merged (``merge_adapter()``). Fresh adapters have
  ``B = 0``; ``B`` is drawn at random (std 0.02) so that the adapters change the output, as
  trained ones do.

Greedy tokens are compared on ``--check-rows`` prompts, ``--tokens`` new tokens: static
against dynamic, merged against unmerged, each path prefilled by its own model.
"""

import argparse
import copy
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from default_run import matmul_peak  # benchmarks/ is on sys.path when run as a script
from hydra import compose, initialize
from hydra.utils import instantiate
from transformers import CompileConfig, DynamicCache, StaticCache

import lmcot  # noqa: F401  (config resolvers)
from lmcot import memory
from lmcot.data import synthetic
from lmcot.lm.base import GenerationParams
from lmcot.lm.kvcache import growing_cache
from lmcot.lm.prefix import extend
from lmcot.lm.sampling import InverseCDFDraw, vocabulary_sampling
from lmcot.precision import BF16_CPU_FLAGS, bf16_supported, cpu_flags


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "unknown CPU"


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class Bounds:
    """The weights-read and compute bounds of one model on this machine, and what parts of a
    decoding step cost measured alone."""

    def __init__(self, model):
        params = list(model.parameters())  # tied weights once
        self.params = sum(p.numel() for p in params)
        self.bytes = sum(p.numel() * p.element_size() for p in params)
        self.dtype = params[0].dtype
        self.vocab = model.config.vocab_size
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // (
            config.num_attention_heads
        )
        self.kv_bytes = (
            2
            * config.num_hidden_layers
            * config.num_key_value_heads
            * head_dim
            * (self.dtype.itemsize)
        )  # per cached position of a row
        buffer = torch.ones(self.bytes // 4)  # fp32: the fastest reduction, the same bytes
        self.stream = best_seconds(buffer.sum, 5)
        del buffer
        self.weights = list({m.weight.data_ptr(): m.weight for m in model.modules()
                             if isinstance(m, torch.nn.Linear)}.values())  # fmt: skip
        self.matrix_bytes = sum(w.numel() * w.element_size() for w in self.weights)
        self.matvec = self.matmuls(1)
        self.gflops = {torch.float32: matmul_peak(torch.float32)}
        if bf16_supported("cpu"):
            self.gflops[torch.bfloat16] = matmul_peak(torch.bfloat16)

    def matmuls(self, rows: int) -> float:
        """Seconds of ``rows`` x every weight matrix of the model (``F.linear``), best of 3."""
        inputs = {w.shape[1]: torch.ones(rows, w.shape[1], dtype=w.dtype) for w in self.weights}

        def sweep():
            for w in self.weights:
                F.linear(inputs[w.shape[1]], w)

        return best_seconds(sweep, 3)

    def sampling(self, rows: int) -> tuple[float, float]:
        """Seconds of one draw per row from the whole vocabulary: softmax and multinomial, and
        the inverse-CDF draw, each best of 3."""
        logits = torch.randn(rows, self.vocab)
        return (best_seconds(lambda: torch.multinomial(logits.softmax(-1), 1), 3),
                best_seconds(lambda: InverseCDFDraw()(None, logits), 3))  # fmt: skip

    def kv_read(self, rows: int, positions: int) -> float:
        """Seconds to read ``rows`` x ``positions`` cached keys and values at the stream rate."""
        return self.kv_bytes * rows * positions / (self.bytes / self.stream)

    @property
    def weights_read(self) -> float:
        """Seconds to read every weight once: the faster probe."""
        return min(self.stream, self.matvec * self.bytes / self.matrix_bytes)

    def compute(self, rows: int) -> float:
        """Seconds of 2 x params FLOPs per row at the GEMM probe's rate in the model's dtype."""
        rate = self.gflops.get(self.dtype, self.gflops[torch.float32])
        return 2 * self.params * rows / (rate * 1e9)

    def bound(self, rows: int) -> float:
        return max(self.weights_read, self.compute(rows))

    def describe(self) -> list[str]:
        dtype = str(self.dtype).removeprefix("torch.")
        gemm = ", ".join(f"{str(d).removeprefix('torch.')} {g:.0f}"
                         for d, g in self.gflops.items())  # fmt: skip
        return [
            f"weights: {self.params / 1e6:.1f} M parameters, {self.bytes / 1e6:.0f} MB ({dtype})",
            f"weights-read probes: sum() over {self.bytes / 1e6:.0f} MB "
            f"{self.stream * 1e3:.1f} ms ({self.bytes / self.stream / 1e9:.1f} GB/s); "
            f"batch-1 matvec over every weight matrix ({self.matrix_bytes / 1e6:.0f} MB) "
            f"{self.matvec * 1e3:.1f} ms ({self.matrix_bytes / self.matvec / 1e9:.1f} GB/s)"
            f" -> weights-read bound {self.weights_read * 1e3:.1f} ms/step",
            f"GEMM probe (2048^3 matmul): {gemm} GFLOP/s -> compute bound: "
            f"{2 * self.params / 1e9:.2f} GFLOP per token per row at the {dtype} rate",
        ]


def prefill(model, batch) -> DynamicCache:
    """All but the last prompt token of every row into a fresh cache (``CausalLM._sample``)."""
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        extend(model, cache, batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1])
    return cache


def filled(target, cache: DynamicCache):
    """``target`` (an empty cache of another kind) holding what ``cache`` holds."""
    for layer, source in zip(target.layers, cache.layers):
        layer.update(source.keys, source.values)
    return target


class Path:
    """One way to decode: ``run(batch, cache, new_tokens, greedy)`` -> generated ids."""

    def __init__(self, name: str, model, pad: int, length: int, compiled: bool = False,
                 sampler: dict | None = None, growing: bool = False):  # fmt: skip
        self.name, self.model, self.pad, self.length = name, model, pad, length
        self.compiled, self.growing = compiled, growing
        self.sampler = sampler or vocabulary_sampling(GenerationParams(temperature=1.0))
        self.steps: dict[int, float] = {}
        self.compile_s: dict[int, float] = {}
        self.error: str | None = None

    def fresh(self, cache: DynamicCache):
        if self.compiled:
            static = StaticCache(config=self.model.config, max_cache_len=self.length)
            return filled(static, cache)
        if self.growing:
            return filled(growing_cache(self.model.config), cache)
        return copy.deepcopy(cache)

    def run(self, batch, cache, new_tokens: int, greedy: bool = False) -> torch.Tensor:
        kwargs = {"do_sample": False} if greedy else dict(self.sampler)
        if self.compiled:
            config = CompileConfig(mode="default")
            config._compile_all_devices = True  # generate compiles on CUDA only, unless this
            kwargs["compile_config"] = config
        torch.manual_seed(0)
        with torch.inference_mode():
            return self.model.generate(
                **batch,
                cache=cache,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=self.pad,
                **kwargs,
            )

    def timed(self, batch, cache, new_tokens: int) -> float:
        fresh = self.fresh(cache)  # outside the clock
        start = time.perf_counter()
        self.run(batch, fresh, new_tokens)
        return time.perf_counter() - start


def first_difference(a: torch.Tensor, b: torch.Tensor, width: int) -> str:
    """``same tokens`` or where two greedy outputs (prompts ``width`` wide) first differ."""
    if torch.equal(a, b):
        return f"same tokens in all {a.shape[0]} rows"
    rows = [i for i in range(a.shape[0]) if not torch.equal(a[i], b[i])]
    at = min(int((a[i] != b[i]).nonzero()[0]) for i in rows) - width
    return f"DIFFERENT tokens in {len(rows)} of {a.shape[0]} rows (first at new token {at})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    paths = ["dynamic", "growing", "multinomial", "static", "lora"]
    parser.add_argument("--paths", nargs="+", default=paths, choices=paths)
    parser.add_argument("--check-rows", type=int, default=4, help="greedy prompts compared")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: its own)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return run(args)
    with tempfile.TemporaryDirectory(prefix="inductor-") as cold:  # a cold compile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold
        run(args)


def run(args) -> None:
    flags = sorted(f for f in BF16_CPU_FLAGS if f in cpu_flags())
    print(f"{cpu_model()}, {os.cpu_count()} cores, bf16 flags: {', '.join(flags) or 'none'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"load at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", overrides=["reader.cache=null"])
    memory.set_mmap_threshold(cfg.malloc_mmap_threshold)  # the allocator train.py runs with
    reader = instantiate(cfg.reader)
    model, tok = reader.model, reader.tokenizer
    bounds = Bounds(model)
    prompt = instantiate(cfg.prompts.rationale)
    examples = synthetic.load(split="train", num_train=max(*args.rows, args.check_rows))
    texts = [reader.format(prompt.render(ex)) for ex in examples]
    batches = {r: tok(texts[:r], return_tensors="pt", padding=True) for r in args.rows}
    # one cache length for every row count: a compiled step then changes only its batch shape
    longest = max(len(ids) for ids in tok(texts)["input_ids"])
    length = longest + args.tokens + 2
    widths = ", ".join(f"{r} rows {b['input_ids'].shape[1]}" for r, b in batches.items())
    print(
        f"{reader.name_or_path.rsplit('/', 1)[-1]}: {args.tokens} sampled tokens per row after "
        f"a prefilled prompt (prompt tokens, padded: {widths})"
    )
    for line in bounds.describe():
        print("  " + line)

    start = time.perf_counter()
    caches = {r: prefill(model, b) for r, b in batches.items()}
    print(f"  prefill of every row count, once: {time.perf_counter() - start:.1f} s (not timed)")

    paths = []
    if "dynamic" in args.paths:
        paths.append(Path("dynamic (today)", model, tok.pad_token_id, length))
    if "growing" in args.paths:
        paths.append(Path("growing (in place)", model, tok.pad_token_id, length, growing=True))
    if "multinomial" in args.paths:
        own = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
        paths.append(Path("multinomial", model, tok.pad_token_id, length, sampler=own))
    if "static" in args.paths:
        paths.append(Path("static + compile", model, tok.pad_token_id, length, compiled=True))
    if "lora" in args.paths:
        student = instantiate(cfg.student).model
        torch.manual_seed(0)
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.data.normal_(std=0.02)
        merged = copy.deepcopy(student)
        merged.merge_adapter()
        paths.append(Path("LoRA unmerged", student, tok.pad_token_id, length))
        paths.append(Path("LoRA merged", merged, tok.pad_token_id, length))

    for rows in args.rows:
        batch, cache = batches[rows], caches[rows]
        for path in paths:  # the first call at a shape: warm-up, and compilation
            if path.error:
                continue
            try:
                first = path.timed(batch, cache, 2)
            except Exception as exc:  # a path this CPU or torch cannot run: say so, go on
                path.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            path.compile_s[rows] = first
        ones, longs = {p.name: [] for p in paths}, {p.name: [] for p in paths}
        for _ in range(args.repeats):
            for path in paths:
                if not path.error:
                    ones[path.name].append(path.timed(batch, cache, 1))
                    longs[path.name].append(path.timed(batch, cache, args.tokens + 1))
        for path in paths:
            if not path.error:
                one, long = min(ones[path.name]), min(longs[path.name])
                path.steps[rows] = (long - one) / args.tokens
                # the first call's excess over a steady 2-token call
                path.compile_s[rows] -= one + path.steps[rows]

    print(f"load at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("parts of a step, each measured alone (not counted in the bound):")
    print(f"{'rows':>6s} {'matmuls ms':>11s} {'multinomial ms':>15s} {'inverse CDF ms':>15s} "
          f"{'KV read ms':>11s}")  # fmt: skip
    for rows in args.rows:
        mean_width = batches[rows]["input_ids"].shape[1] + args.tokens // 2
        multinomial, inverse = bounds.sampling(rows)
        print(f"{rows:6d} {bounds.matmuls(rows) * 1e3:11.1f} {multinomial * 1e3:15.1f} "
              f"{inverse * 1e3:15.1f} {bounds.kv_read(rows, mean_width) * 1e3:11.1f}")  # fmt: skip
    print(
        "  (matmuls: F.linear of every weight matrix at that batch; multinomial, inverse CDF: "
        "one draw a row from the vocabulary, softmax included; KV read: the mean step's cache "
        "at the sum() rate)"
    )
    print()
    header = (f"{'path':18s} {'rows':>4s} {'tokens/s':>9s} {'ms/step':>8s} {'bound ms':>9s} "
              f"{'set by':>8s} {'x bound':>8s}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for path in paths:
        if path.error:
            print(f"{path.name:18s} failed: {path.error}")
            continue
        for rows, step in path.steps.items():
            bound = bounds.bound(rows)
            which = "weights" if bound == bounds.weights_read else "compute"
            print(f"{path.name:18s} {rows:4d} {rows / step:9.1f} {step * 1e3:8.1f} "
                  f"{bound * 1e3:9.1f} {which:>8s} {step / bound:8.2f}")  # fmt: skip
    print()
    for path in paths:
        if path.compiled and not path.error:
            times = ", ".join(f"{r} rows {s:.0f} s" for r, s in path.compile_s.items())
            print(f"{path.name}: compile time (first call minus a steady one): {times}")

    reference = {"static + compile": "dynamic (today)", "LoRA merged": "LoRA unmerged",
                 "growing (in place)": "dynamic (today)"}  # fmt: skip
    check = tok(texts[: args.check_rows], return_tensors="pt", padding=True)
    outputs = {}
    for path in paths:
        if path.error or (path.name not in reference and path.name not in reference.values()):
            continue
        try:
            cache = prefill(path.model, check)
            outputs[path.name] = path.run(check, path.fresh(cache), args.tokens, greedy=True)
        except Exception as exc:
            outputs[path.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    for name, ref in reference.items():
        if name in outputs and ref in outputs:
            a, b = outputs[name], outputs[ref]
            if isinstance(a, str) or isinstance(b, str):
                print(f"greedy check {name} vs {ref}: failed: {a if isinstance(a, str) else b}")
            else:
                print(
                    f"greedy, {args.check_rows} prompts x {args.tokens} tokens, {name} vs "
                    f"{ref}: {first_difference(a, b, check['input_ids'].shape[1])}"
                )
    print()
    for path in paths:
        if path.error:
            print(f"{path.name}: failed ({path.error})")
            continue
        small, large = min(path.steps), max(path.steps)
        print(
            f"{path.name}: {small} row{'s' * (small > 1)}: "
            f"{path.steps[small] / bounds.weights_read:.1f} x the weights-read bound; "
            f"{large} rows: {path.steps[large] / bounds.bound(large):.1f} x the bound"
        )


if __name__ == "__main__":
    main()
