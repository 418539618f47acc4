"""Wall time of the default ``python train.py``, by stage and by method, with a fresh cache.

    python benchmarks/default_run.py [HYDRA_OVERRIDE ...]

Runs ``train.py`` in this process with ``LMCOT_CACHE`` pointed at a new temporary directory
(so every LM call and every stage really runs; the converted offline models in
``LMCOT_MODELS`` are reused) and prints: seconds per stage (every stage of ``train.STAGES``,
whatever stages exist), seconds per evaluated method (from the evaluation's "method ... on"
log records), peak RSS in all and per stage and method (sampled every 0.2 s from
``/proc/self/statm``, so Linux only), and EM/F1 per method from the run's ``results.json``.
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

REPO = Path(__file__).resolve().parents[1]


class PeakRss(threading.Thread):
    """The peak resident memory of the running stage and of the method being evaluated,
    sampled: says where the memory goes, where ``ru_maxrss`` says only how much at most."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stage, self.method = "start-up", None
        self.peaks: dict[str, int] = defaultdict(int)

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            for label in filter(None, (self.stage, self.method)):
                self.peaks[label] = max(self.peaks[label], rss)
            time.sleep(0.2)


class MethodClock(logging.Handler):
    """Records when each "method <name> on <n> examples" log record arrives."""

    def __init__(self, rss: PeakRss):
        super().__init__(logging.INFO)
        self.starts: list[tuple[str, float]] = []
        self.rss = rss

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "lmcot.evaluate" and record.msg.startswith("method %s on"):
            self.starts.append((record.args[0], time.perf_counter()))
            self.rss.method = record.args[0]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lmcot-default-run-"))
    os.environ["LMCOT_CACHE"] = str(tmp / "cache")
    sys.path.insert(0, str(REPO))
    import train  # after LMCOT_CACHE is set; train.py's own imports load lmcot

    stage_seconds: dict[str, float] = {}
    stage_ends: dict[str, float] = {}
    rss = PeakRss()
    rss.start()

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

    # Hydra finds conf/ beside the script only for a task function of module __main__, as when
    # train.py is run as a script; imported here it would look for a module named `conf`
    train.main.__wrapped__.__module__ = "__main__"
    run_dir = tmp / "run"
    sys.argv = ["train.py", f"hydra.run.dir={run_dir}", *sys.argv[1:]]
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
    gb = {name: f"{peak / 2**30:.2f}" for name, peak in rss.peaks.items()}
    print(f"{'stage':<28}{'wall s':>8}{'peak RSS GB':>14}")
    for name, seconds in stage_seconds.items():
        print(f"{name:<28}{seconds:>8.0f}{gb.get(name, ''):>14}")
    print(f"{'start-up and the rest':<28}{total - sum(stage_seconds.values()):>8.0f}")
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    methods = results.get("methods", {})
    ends = [t for _, t in clock.starts[1:]] + [stage_ends.get("evaluate", time.perf_counter())]
    print(f"\n{'method':<28}{'wall s':>8}{'EM':>8}{'F1':>8}{'peak RSS GB':>14}   "
          f"n={results.get('n')}")  # fmt: skip
    for (name, began), end in zip(clock.starts, ends):
        m = methods.get(name, {})
        print(f"{name:<28}{end - began:>8.0f}{m.get('em', float('nan')):>8.3f}"
              f"{m.get('f1', float('nan')):>8.3f}{gb.get(name, ''):>14}")  # fmt: skip
    for key in ("reader_calls", "saved_calls"):
        if key in results:
            print(f"{key}: {results[key]}")


if __name__ == "__main__":
    main()
