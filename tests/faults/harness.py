"""Real `python train.py` processes for the fault suite: start one, kill it with SIGKILL a seeded
delay after a log line appears, and check what a run left behind."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
# tiny models, a 12-question training split, two SC samples: seconds per stage
TINY = ["debug=smoke", "student=tiny_llama", "data.num_train=12", "distill.val_em_limit=2",
        "decoding.sc.num_samples=2", "hydra.job_logging.root.level=INFO"]  # fmt: skip
TIMEOUT_S = 600  # one run; a hang is a failure, not a CI timeout


def env() -> dict:
    """The test environment: offline, W&B offline, converted models in this clone's cache."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
            "LMCOT_MODELS": str(REPO / ".cache" / "test-models"),
            "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def train_cmd(root: Path, *overrides: str, multirun: bool = False, run: str = "run",
              ) -> list[str]:  # fmt: skip
    """`python train.py` writing only under ``root`` (cache, run dir ``run`` or sweep dir)."""
    where = f"hydra.sweep.dir={root / 'sweep'}" if multirun else f"hydra.run.dir={root / run}"
    return [sys.executable, str(REPO / "train.py"), *(["-m"] if multirun else []),
            f"paths.cache_dir={root / 'cache'}", where, *TINY, *overrides]  # fmt: skip


@dataclass
class Outcome:
    returncode: int | None  # None: killed
    log: str
    trigger_s: float | None  # seconds from start until the trigger line appeared
    total_s: float  # seconds from start until the process ended


def run(cmd: list[str], log: Path, trigger: str | None = None, kill_after: float | None = None,
        ) -> Outcome:  # fmt: skip
    """Run ``cmd`` (output to ``log``); with ``kill_after``, SIGKILL its process group that many
    seconds after ``trigger`` first appears in the output (unless it has ended by then)."""
    start = time.monotonic()
    seen = None
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=log.parent, env=env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            while proc.poll() is None:
                now = time.monotonic() - start
                if now > TIMEOUT_S:
                    raise TimeoutError(f"{cmd} ran over {TIMEOUT_S} s; log: {log}")
                if trigger and seen is None and trigger.encode() in log.read_bytes():
                    seen = now
                if seen is not None and kill_after is not None and now >= seen + kill_after:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this call started
                    proc.wait()
                    return Outcome(None, log.read_text(errors="replace"), seen, now)
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return Outcome(proc.returncode, log.read_text(errors="replace"),
                   seen, time.monotonic() - start)  # fmt: skip


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def results_core(run_dir: Path) -> dict:
    """What must not depend on interruptions: every method's numbers and every prediction."""
    results = json.loads((run_dir / "results.json").read_text())
    return {"methods": results["methods"], "diagnostics": results["diagnostics"],
            "predictions": jsonl(run_dir / "predictions.jsonl")}  # fmt: skip


def check_left_behind(root: Path) -> None:
    """What any run, killed and re-run or not, must leave: unique JSONL rows, only finished
    exports used, loadable checkpoints and SQLite caches that pass their integrity check."""
    cache = root / "cache"
    for path in cache.glob("teacher/*/rationales.jsonl"):
        keys = [(r["id"], r["sample"]) for r in jsonl(path)]
        assert len(keys) == len(set(keys)), f"{path}: a row written twice"
    for path in root.rglob("predictions.jsonl"):
        keys = [(r["id"], r["method"]) for r in jsonl(path)]
        assert len(keys) == len(set(keys)), f"{path}: a prediction written twice"
    for student in cache.glob("*/*/student"):
        assert (student / "lmcot_done.json").exists(), f"{student}: an export without its marker"
    for ckpt in cache.rglob("*.ckpt"):
        torch.load(ckpt, map_location="cpu", weights_only=False)  # a cut file raises
    for db in cache.rglob("*.sqlite"):
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db
