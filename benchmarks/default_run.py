"""Wall time, memory and compute of the default ``python train.py``, by stage and by method,
with a fresh cache.

    python benchmarks/default_run.py [HYDRA_OVERRIDE ...]

Runs ``train.py`` in this process with ``LMCOT_CACHE`` pointed at a new temporary directory
(so every LM call and every stage really runs; the converted offline models in
``LMCOT_MODELS`` are reused) and prints: seconds per stage (every stage of ``train.STAGES``,
whatever stages exist), seconds per evaluated method (from the evaluation's "method ... on"
log records), peak RSS in all and per stage and method (sampled every 0.2 s from
``/proc/self/statm``, so Linux only), model FLOPs and achieved GFLOP/s per stage and method
(:class:`ModelFlops`) with their fraction of this machine's matmul peak (a GEMM probe run
first, in fp32 and, where the CPU has bf16 instructions, in bf16), and EM/F1 per method from
the run's ``results.json``.
Any arguments are Hydra overrides passed on, e.g. ``data.limit=8``. Run it on an idle
machine, and note the load.
"""

import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

from lmcot.precision import bf16_supported

REPO = Path(__file__).resolve().parents[1]


class PeakRss(threading.Thread):
    """The peak resident memory of the running stage and of the method being evaluated,
    sampled: says where the memory goes, where ``ru_maxrss`` says only how much at most.
    ``phase`` is the last lmcot log line (:class:`Phase`); ``where`` holds it at each peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stage, self.method, self.phase = "start-up", None, ""
        self.peaks: dict[str, int] = defaultdict(int)
        self.where: dict[str, str] = {}

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            for label in filter(None, (self.stage, self.method)):
                if rss > self.peaks[label]:
                    self.peaks[label], self.where[label] = rss, self.phase
            time.sleep(0.2)


class ModelFlops:
    """Model FLOPs of every transformers model call, by the stage and method running.

    Forward: 2 x parameters x tokens (Kaplan et al. 2020's approximation, for the decoder-only
    models of the default run; the attention's context term is left out), the input embedding
    excluded and the output head counted at the positions whose logits were computed; padded
    positions count (they are computed). A forward with gradients is followed by its backward:
    input gradients through every weight (1 x the forward) and weight gradients of the trained
    ones (their share of it), so LoRA training costs ~2x a forward, full fine-tuning 3x.
    Only the outermost model call counts (a PEFT wrapper or a head calls its trunk inside).
    """

    def __init__(self, labels: PeakRss):
        self.labels, self.flops = labels, defaultdict(float)
        self.depth = 0

    def install(self) -> None:
        from transformers import PreTrainedModel

        call = torch.nn.Module.__call__

        def counted(model, *args, **kwargs):
            self.depth += 1
            try:
                out = call(model, *args, **kwargs)
            finally:
                self.depth -= 1
            if self.depth == 0:
                self.add(model, kwargs.get("input_ids", args[0] if args else None), out)
            return out

        PreTrainedModel.__call__ = counted

    def add(self, model, input_ids, out) -> None:
        if input_ids is None:
            return
        head = model.get_output_embeddings()
        embed = model.get_input_embeddings()
        params = list(model.parameters())
        total = sum(p.numel() for p in params)
        trunk = total - embed.weight.numel() - (0 if head is None or head.weight is embed.weight
                                                else head.weight.numel())  # fmt: skip
        logits = getattr(out, "logits", None)
        positions = logits.shape[0] * logits.shape[1] if logits is not None else 0
        forward = (
            2 * trunk * input_ids.numel() + 2 * (head.weight.numel() if head else 0) * positions
        )
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            trained = sum(p.numel() for p in params if p.requires_grad)
            forward *= 2 + trained / total
        for label in filter(None, (self.labels.stage, self.labels.method)):
            self.flops[label] += forward


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` square matmuls: this machine's practical peak."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # oneDNN picks its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class Phase(logging.Handler):
    """Keeps the last lmcot log line (a progress line, a "loading ..."), so a stage's peak
    says what was running when it was reached."""

    def __init__(self, rss: PeakRss):
        super().__init__(logging.INFO)
        self.rss = rss

    def emit(self, record: logging.LogRecord) -> None:
        self.rss.phase = f"{record.name}: {record.getMessage()}"[:100]


class MethodClock(logging.Handler):
    """Records when each "method <name> on <n> examples" log record arrives, and where the
    evaluation wrote its results (whatever override chose the directory)."""

    def __init__(self, rss: PeakRss):
        super().__init__(logging.INFO)
        self.starts: list[tuple[str, float]] = []
        self.rss = rss
        self.results: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "lmcot.evaluate" and record.msg.startswith("method %s on"):
            self.starts.append((record.args[0], time.perf_counter()))
            self.rss.method = record.args[0]
        elif record.name == "lmcot.evaluate" and record.msg == "wrote %s":
            self.results = Path(record.args[0])


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lmcot-default-run-"))
    os.environ["LMCOT_CACHE"] = str(tmp / "cache")
    sys.path.insert(0, str(REPO))
    import train  # after LMCOT_CACHE is set; train.py's own imports load lmcot

    stage_seconds: dict[str, float] = {}
    stage_ends: dict[str, float] = {}
    # bf16 is probed only where the CPU has bf16 matrix instructions: elsewhere torch computes it
    # in a reference kernel (a 2048^3 product ran for minutes on an AVX2-only EPYC)
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if not bf16_supported("cpu"):
        del dtypes["bf16"]
    peaks = {name: matmul_peak(dtype) for name, dtype in dtypes.items()}
    fastest = max(peaks, key=peaks.get)
    rss = PeakRss()
    rss.start()
    flops = ModelFlops(rss)
    flops.install()

    def timed(name, run):
        def stage(cfg):
            start = time.perf_counter()
            rss.stage, rss.method = name, None
            try:
                return run(cfg)
            finally:
                stage_ends[name] = time.perf_counter()
                stage_seconds[name] = stage_ends[name] - start

        return stage

    for name, run in list(train.STAGES.items()):
        train.STAGES[name] = timed(name, run)
    clock = MethodClock(rss)
    logging.getLogger("lmcot.evaluate").addHandler(clock)
    logging.getLogger("lmcot").addHandler(Phase(rss))

    # Hydra finds conf/ beside the script only for a task function of module __main__, as when
    # train.py is run as a script; imported here it would look for a module named `conf`
    train.main.__wrapped__.__module__ = "__main__"
    sys.argv = ["train.py", f"hydra.run.dir={tmp / 'run'}", *sys.argv[1:]]
    start = time.perf_counter()
    try:
        train.main()
    except SystemExit as e:  # hydra.main exits on a failed job; report what was measured
        if e.code:
            print(f"train.py exited with {e.code}")
    total = time.perf_counter() - start

    print(f"\ndefault run: {total:.0f} s wall, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB "
          f"(fresh cache {tmp / 'cache'}; load {os.getloadavg()[0]:.1f})")  # fmt: skip
    measured = ", ".join(f"{name} {peak:.0f} GFLOP/s" for name, peak in peaks.items())
    print(f"matmul peak (2048^3 GEMM probe, {torch.get_num_threads()} threads): {measured}; "
          f"'of peak' below is of the {fastest} peak")  # fmt: skip
    gb = {name: f"{peak / 2**30:.2f}" for name, peak in rss.peaks.items()}

    def compute(name: str, seconds: float) -> str:
        tflop = flops.flops.get(name, 0.0) / 1e12
        rate = tflop * 1e3 / seconds if seconds else 0.0
        return f"{tflop:>9.2f}{rate:>9.1f}{rate / peaks[fastest]:>9.1%}"

    header = f"{'wall s':>8}{'peak RSS GB':>14}{'TFLOP':>9}{'GFLOP/s':>9}{'of peak':>9}"
    print(f"{'stage':<28}{header}")
    for name, seconds in stage_seconds.items():
        print(f"{name:<28}{seconds:>8.0f}{gb.get(name, ''):>14}{compute(name, seconds)}")
    print(f"{'start-up and the rest':<28}{total - sum(stage_seconds.values()):>8.0f}")
    print("\neach stage's peak RSS came after the log line")
    for name in stage_seconds:
        print(f"{name:<28}{rss.where.get(name, '')}")
    results = json.loads(clock.results.read_text()) if clock.results else {}
    methods = results.get("methods", {})
    ends = [t for _, t in clock.starts[1:]] + [stage_ends.get("evaluate", time.perf_counter())]
    print(f"\n{'method':<28}{'EM':>8}{'F1':>8}{header}   n={results.get('n')}")
    for (name, began), end in zip(clock.starts, ends):
        m = methods.get(name, {})
        print(
            f"{name:<28}{m.get('em', float('nan')):>8.3f}{m.get('f1', float('nan')):>8.3f}"
            f"{end - began:>8.0f}{gb.get(name, ''):>14}{compute(name, end - began)}"
        )
    print(f"precision: {results.get('precision')}")
    for key in ("reader_calls", "saved_calls"):
        if key in results:
            print(f"{key}: {results[key]}")


if __name__ == "__main__":
    main()
