"""Paper-style tables and plots over one or more multiruns, from the files the jobs left behind.

Usage::

    python -m lmcot.report outputs/train/multiruns/2025-01-01_12-00-00 [MORE_DIRS] [--out DIR]
        [--bootstrap-samples 2000] [--seed 0]

Written to ``--out`` (default: ``<first dir>/report``): ``report.md``, one CSV per table and
PNG plots, each plot only when the runs hold the data for it. Rows are labelled with the config
values that differ between jobs (other than seed and the dataset), read from each job's own
config, so jobs that differ are never averaged together and jobs that ran one configuration share
a row; jobs that differ only in seed are shown as mean ± std over seeds (sample std).
No model is loaded, so re-running is cheap. :mod:`lmcot.report.jobs` says what a job is,
:mod:`lmcot.report.tables` what the tables hold; docs/report.md describes every table.
"""

import argparse
from pathlib import Path

from lmcot.report.jobs import Job, find_jobs, quality_aspects, repeated_jobs, varying_keys
from lmcot.report.output import report_text, write_csv
from lmcot.report.plots import (
    plot_aspect_matrix,
    plot_aspects,
    plot_cost,
    plot_sc_samples,
    plot_sizes,
)
from lmcot.report.tables import (
    aspect_matrix,
    aspect_table,
    decoding_table,
    differences,
    main_table,
    size_table,
    student_size,
)
from lmcot.stats import NUM_RESAMPLES

__all__ = ["Job", "build", "main", "student_size"]


def build(dirs: list[Path], out: Path, samples: int = NUM_RESAMPLES, seed: int = 0) -> Path:
    """Gather the jobs below ``dirs``; write report.md, CSVs and PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = find_jobs(dirs)
    done = [job for job in jobs if job.results is not None]
    missing = [job for job in jobs if job.results is None]
    keys = varying_keys(done)
    aspects = quality_aspects(done)
    notes = repeated_jobs(done, keys)
    tables = {
        "main": main_table(done, keys, samples, seed),
        "differences": differences(done, keys, samples, seed, notes),
        "aspects": aspect_table(done, keys, aspects),
        "aspect_matrix": aspect_matrix(done, keys, samples, seed, notes),
        "decoding": decoding_table(done, keys),
        "model_sizes": size_table(done, keys),
        "missing": [
            {"job": str(j.dir), "overrides": " ".join(j.overrides), "reason": j.error}
            for j in missing
        ],  # fmt: skip
    }
    for name, rows in tables.items():
        write_csv(rows, out / f"{name}.csv")
    plots = [
        ("em_vs_student_size.png", plot_sizes, (tables["model_sizes"],)),
        ("em_vs_sc_samples.png", plot_sc_samples, (tables["decoding"],)),
        ("quality_kd_vs_rl.png", plot_aspects, (tables["aspects"], aspects)),
        ("em_vs_cost.png", plot_cost, (tables["main"],)),
        ("aspect_matrix.png", plot_aspect_matrix, (tables["aspect_matrix"],)),
    ]
    written = [name for name, plot, args in plots if plot(*args, out / name)]
    text = report_text(dirs, jobs, done, tables, written, notes)
    path = out / "report.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmcot.report", description=__doc__.split(
        "\n")[0])  # fmt: skip
    parser.add_argument("dirs", nargs="+", type=Path, help="multirun (or run) directories")
    parser.add_argument("--out", type=Path, help="output directory (default: <first>/report)")
    parser.add_argument("--bootstrap-samples", type=int, default=NUM_RESAMPLES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            parser.error(f"{d} is not a directory")
    path = build(args.dirs, args.out or args.dirs[0] / "report", args.bootstrap_samples, args.seed)
    print(f"wrote {path}")
