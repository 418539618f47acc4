"""What every entry point does around its stage: seed, skip a finished sweep job, keep a
multirun going past a failed job, and say where outputs went."""

import functools
import json
import logging
import os
import time
import traceback
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning import seed_everything
from rich.markup import escape
from rich.table import Table

from lmcot import memory
from lmcot.artifacts import is_rank_zero, job_key, write_atomic
from lmcot.console import console
from lmcot.quiet import quiet_libraries
from lmcot.results import logged_metrics

log = logging.getLogger(__name__)
ERROR_FILE = "error.txt"  # a failed multirun job's traceback, in its output dir


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finished_metrics(output_dir: str | Path, key: str) -> dict[str, float] | None:
    """The metrics of a job that already finished in ``output_dir`` with the same job key."""
    path = Path(output_dir) / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    if results.get("job_key") != key:
        return None
    return logged_metrics(results)  # what the job returned when it ran


def _stamp(results: Path, key: str) -> None:
    # the job key goes in last, so only a job that finished carries it; rank zero wrote the
    # results, and only it stamps them
    if results.exists() and is_rank_zero():
        summary = json.loads(results.read_text())
        write_atomic(results, json.dumps(summary | {"job_key": key}, indent=2) + "\n")


def task_wrapper(task):
    """Seed from ``cfg.seed``, run ``task(cfg)``, log any exception, always print the output dir;
    library noise is filtered first (:mod:`lmcot.quiet`).

    In a multirun, a job whose ``results.json`` holds the same job key is skipped (re-running a
    sweep command redoes only missing or failed jobs), and a failing job writes its traceback
    to ``error.txt`` and returns None, so the other jobs go on and :class:`SweepSummary` lists
    it at the end. A single run fails loudly.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig):
        quiet_libraries()  # after Hydra's logging setup, before any library speaks
        seed_everything(cfg.seed, workers=True, verbose=False)
        memory.set_mmap_threshold(cfg.get("malloc_mmap_threshold"))
        out = Path(cfg.paths.output_dir)
        # jobs side by side (hydra/launcher=cpu_parallel) each get a share of the cores
        log.info("torch threads: %d", torch.get_num_threads())
        multirun, key = _multirun(), job_key(cfg)  # the key of the config as launched
        try:
            if multirun and (done := finished_metrics(out, key)) is not None:
                log.info("job already finished with this config, skipping: %s", out)
                return done
            (out / ERROR_FILE).unlink(missing_ok=True)
            metrics = task(cfg)
            _stamp(out / "results.json", key)
            return metrics
        except Exception as e:
            log.exception("%s failed", task.__name__)
            if not multirun:
                raise
            out.mkdir(parents=True, exist_ok=True)
            summary = " ".join(f"{type(e).__name__}: {e}".split())  # first line: what failed
            (out / ERROR_FILE).write_text(f"{summary}\n\n{traceback.format_exc()}")
            return None
        finally:
            log.info("output dir: %s", out)

    return wrapped


class SweepSummary(Callback):
    """Groups a multirun's W&B runs (sweep name + start time, through ``LMCOT_SWEEP_GROUP``,
    which launched jobs inherit), and at its end prints one line per job (done, failed with its
    error, or missing) and exits non-zero when a job failed, so scripts and CI notice."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        name = config.get("sweep") or config.get("task_name", "multirun")
        os.environ.setdefault("LMCOT_SWEEP_GROUP", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
        table = Table(title=f"multirun {sweep_dir}")
        for column in ("job", "status", "error"):
            table.add_column(column, overflow="fold")
        failed = []
        for job in jobs:
            if (job / ERROR_FILE).exists():
                first = (job / ERROR_FILE).read_text().splitlines()[0]
                failed.append(job)
                table.add_row(escape(job.name), "[red]failed[/red]", escape(first[:300]))
            elif (job / "results.json").exists():
                table.add_row(escape(job.name), "[green]done[/green]", "")
            else:
                table.add_row(escape(job.name), "[yellow]missing[/yellow]", "")
        console().print(table)
        if failed:  # SystemExit: Hydra turns an Exception from a callback into a mere warning
            raise SystemExit(
                f"{len(failed)} of {len(jobs)} jobs failed (tracebacks in their {ERROR_FILE}); "
                "re-run the same command to redo only those"
            )
