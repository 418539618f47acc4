"""Two runs on the same questions, method by method: did a change (precision, a prompt, a
token limit) move anything?

Usage::

    python -m lmcot.compare RUN_A RUN_B [--bootstrap-samples 2000] [--seed 0]

``RUN_A`` and ``RUN_B`` are run directories (with ``results.json`` and ``predictions.jsonl``).
For every method both ran: EM of each, the paired difference B − A over the questions both
answered with its bootstrap interval, and how many predictions differ; with rationale quality
in both, the same for the aggregate quality. A change is safe to take where every interval
contains 0; a method evaluated on other questions on one side is an error, not a silent subset.
So are runs whose ``results.json`` names another ``data`` or ``split``, or, on synthetic data,
another ``seed``: its ids (``syn-000000``, ...) repeat across seeds while the questions differ,
so pairing by id would pair different questions. A field that either run did not record (older
results) is not compared. No model is loaded.
"""

import argparse
from pathlib import Path

from rich.table import Table

from lmcot.report import Job
from lmcot.results import interval, wide_console
from lmcot.stats import NUM_RESAMPLES, paired_bootstrap_diff


def load(run_dir: Path) -> Job:
    job = Job.load(run_dir)
    if job.error:
        raise SystemExit(f"{run_dir}: {job.error}")
    if not job.predictions:
        raise SystemExit(f"{run_dir}: no predictions.jsonl")
    return job


SYNTHETIC = "synthetic"  # results.json ``data`` of the generator whose ids repeat across seeds


def check_same_questions(a: Job, b: Job) -> None:
    """Refuse two runs whose questions differ even where their ids agree: another ``data`` or
    ``split``, or synthetic data of another ``seed``; a field absent from either run's
    ``results.json`` (older results) is not compared."""
    fields = ["data", "split"]
    if SYNTHETIC in (a.results.get("data"), b.results.get("data")):
        fields.append("seed")
    differ = [f for f in fields
              if f in a.results and f in b.results and a.results[f] != b.results[f]]  # fmt: skip
    if differ:
        values = "; ".join(f"{f} {a.results[f]!r} vs {b.results[f]!r}" for f in differ)
        raise SystemExit(
            f"{a.dir} and {b.dir} evaluated different questions ({values}): pairing them by "
            "question id would compare different questions"
        )


def paired(a: dict, b: dict, what: str, samples: int, seed: int) -> dict:
    """B − A over the same ids (an error naming both sides where the ids differ)."""
    try:
        diff, ci = paired_bootstrap_diff(b, a, samples, seed)
    except ValueError as e:
        raise SystemExit(f"{what}: {e}") from None
    return {"diff": diff, "ci": list(ci), "n": len(a)}


def compare(a: Job, b: Job, samples: int = NUM_RESAMPLES, seed: int = 0) -> list[dict]:
    """One row per method of both runs (in A's order): EMs, paired EM and quality differences;
    an error where the runs did not evaluate the same questions (:func:`check_same_questions`)."""
    check_same_questions(a, b)
    answers_a, answers_b = (
        {(p["method"], p["id"]): p["prediction"] for p in job.predictions} for job in (a, b)
    )
    rows = []
    for method in (m for m in a.em_by_id if m in b.em_by_id):
        em_a, em_b = a.em_by_id[method], b.em_by_id[method]
        em = paired(em_a, em_b, f"{method} in {a.dir} and {b.dir}", samples, seed)
        row = {
            "method": method, "n": em["n"],
            "em_a": sum(em_a.values()) / len(em_a), "em_b": sum(em_b.values()) / len(em_b),
            "em_diff": em["diff"], "em_ci": em["ci"],
            "changed": sum(answers_a[method, i] != answers_b[method, i] for i in em_a),
        }  # fmt: skip
        qa = a.quality_by_id.get(method, {}).get("aggregate")
        qb = b.quality_by_id.get(method, {}).get("aggregate")
        if qa and qb:
            shared = qa.keys() & qb.keys()
            q = paired({i: qa[i] for i in shared}, {i: qb[i] for i in shared},
                       f"quality of {method}", samples, seed)  # fmt: skip
            row |= {"quality_diff": q["diff"], "quality_ci": q["ci"], "quality_n": q["n"]}
        rows.append(row)
    return rows


def print_table(rows: list[dict], a: Path, b: Path, console=None) -> None:
    console = console or wide_console()
    table = Table(title=f"B − A, paired by question · A {a} · B {b}")
    for column in ("method", "n", "EM A", "EM B", "EM B − A [95% CI]", "answers changed",
                   "quality B − A [95% CI]"):  # fmt: skip
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in rows:
        quality = ""
        if "quality_diff" in r:
            quality = interval(r["quality_diff"], r["quality_ci"], signed=True)
        table.add_row(
            r["method"], str(r["n"]), f"{r['em_a']:.3f}", f"{r['em_b']:.3f}",
            interval(r["em_diff"], r["em_ci"], signed=True), str(r["changed"]), quality,
        )  # fmt: skip
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmcot.compare", description=__doc__.split(
        "\n")[0])  # fmt: skip
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--bootstrap-samples", type=int, default=NUM_RESAMPLES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    a, b = load(args.run_a), load(args.run_b)
    rows = compare(a, b, args.bootstrap_samples, args.seed)
    if not rows:
        raise SystemExit(f"{args.run_a} and {args.run_b} share no method")
    print_table(rows, args.run_a, args.run_b)


if __name__ == "__main__":
    main()
