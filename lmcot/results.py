"""What a run leaves behind: ``results.json``, ``predictions.jsonl`` and a table on screen.

``results.json`` has a stable core (DESIGN.md §4): ``n`` and ``methods.<name>.em|f1|n``;
``report`` gathers these files across a multirun. Beside ``n`` it says what was evaluated:
``data`` (the loader), ``split`` (the split the questions came from, or ``data.path`` as given
for a local file), ``seed`` (the run's one seed) and ``reader``. Beside the core each method
carries ``em_ci`` (percentile bootstrap 95% interval), ``empty`` (answers that normalise to
nothing: a formatting failure of the reader, otherwise silent), ``vs_standard`` and ``vs_kd``
(paired difference of EM to standard prompting and to the KD student's greedy method over the
same questions, with its interval), so that no ordering is read off numbers that the data does
not separate. With ``evaluate.rationale_quality`` the same holds for rationale quality: per-row
scores go to ``quality.jsonl``, and ``quality_intervals.<method>`` carries the interval of the
aggregate quality and its paired difference to the KD student's (``quality.<method>`` keeps the
means).
"""

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from statistics import fmean

from rich.console import Console
from rich.table import Table

from lmcot.artifacts import write_atomic
from lmcot.console import console as wide_console
from lmcot.methods import Prediction
from lmcot.metrics import normalize_answer
from lmcot.stats import NUM_RESAMPLES, bootstrap_ci, paired_bootstrap_diff

BASELINE = "standard"  # every other method's EM is compared with it, paired by example id
# the paired comparisons each method carries: key -> the method compared against
REFERENCES = {"vs_standard": BASELINE, "vs_kd": "lm_guided_kd"}


def summarize(
    predictions: list[Prediction], seed: int = 0, num_resamples: int = NUM_RESAMPLES
) -> dict:
    """EM (with interval), F1, empty answers and the paired differences to standard and to KD,
    per method.

    Methods keep the order in which they first appear.
    """
    by_method: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        by_method[p.method].append(p)
    em_by_id = {name: {p.id: p.em for p in preds} for name, preds in by_method.items()}
    summary = {}
    for name, preds in by_method.items():
        m = {
            "em": sum(p.em for p in preds) / len(preds),
            "f1": sum(p.f1 for p in preds) / len(preds),
            "n": len(preds),
            "em_ci": list(bootstrap_ci([p.em for p in preds], num_resamples, seed)),
            "empty": sum(not normalize_answer(p.prediction) for p in preds),
        }
        for key, reference in REFERENCES.items():
            if reference in by_method and name not in (reference, BASELINE):
                diff, ci = paired_bootstrap_diff(
                    em_by_id[name], em_by_id[reference], num_resamples, seed
                )
                m[key] = {"diff": diff, "ci": list(ci)}
        summary[name] = m
    return summary


def quality_intervals(
    rows: list[dict], seed: int = 0, num_resamples: int = NUM_RESAMPLES
) -> dict[str, dict]:
    """Per method: the bootstrap interval of its mean aggregate quality, and the paired
    difference to the KD student's aggregate over the questions both scored.

    ``rows`` are per-rationale scores (``id``, ``method``, each aspect, ``aggregate``); a row
    whose aggregate is None (no aspect applied) counts on neither side.
    """
    scored: dict[str, dict] = defaultdict(dict)
    for r in rows:
        if r["aggregate"] is not None:
            scored[r["method"]][r["id"]] = r["aggregate"]
    kd = scored.get(REFERENCES["vs_kd"], {})
    intervals = {}
    for method, by_id in scored.items():
        values = list(by_id.values())
        m = {"aggregate": fmean(values),
             "aggregate_ci": list(bootstrap_ci(values, num_resamples, seed))}  # fmt: skip
        shared = sorted(by_id.keys() & kd.keys()) if method != REFERENCES["vs_kd"] else []
        if shared:
            diff, ci = paired_bootstrap_diff(
                {i: by_id[i] for i in shared}, {i: kd[i] for i in shared}, num_resamples, seed
            )
            m["vs_kd"] = {"diff": diff, "ci": list(ci), "n": len(shared)}
        intervals[method] = m
    return intervals


def logged_metrics(results: dict) -> dict[str, float]:
    """The flat ``test/<method>/<metric>`` numbers a run logs and returns to a sweeper."""
    metrics = {}
    for name, m in results["methods"].items():
        metrics |= {f"test/{name}/{metric}": m[metric] for metric in ("em", "f1", "empty")}
        metrics[f"test/{name}/em_ci_low"], metrics[f"test/{name}/em_ci_high"] = m["em_ci"]
    return metrics


def write(
    output_dir: str | Path, results: dict, predictions: list[Prediction], quality: list[dict] = ()
) -> Path:
    """Write ``results.json``, ``predictions.jsonl`` and (when scored) ``quality.jsonl`` into
    ``output_dir``; return the first."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = "".join(json.dumps(asdict(p)) + "\n" for p in predictions)
    write_atomic(out / "predictions.jsonl", rows)
    if quality:
        write_atomic(out / "quality.jsonl", "".join(json.dumps(r) + "\n" for r in quality))
    path = out / "results.json"
    write_atomic(path, json.dumps(results, indent=2) + "\n")
    return path


def interval(value: float, ci: list[float], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.3f} [{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"


def print_table(results: dict, console: Console | None = None) -> None:
    """Print EM with its 95% interval, F1, empty answers and the paired difference to standard."""
    console = console or wide_console()
    data = results["data"] + (f" ({results['split']})" if results.get("split") else "")
    seed = f" · seed {results['seed']}" if "seed" in results else ""
    table = Table(title=f"{data} · n={results['n']}{seed} · reader {results['reader']}")
    table.add_column("method")
    table.add_column("EM [95% CI]", justify="right")
    table.add_column("F1", justify="right")
    table.add_column("empty", justify="right")
    shown = [k for k in REFERENCES if any(k in m for m in results["methods"].values())]
    for key in shown:
        table.add_column(f"EM − {REFERENCES[key]} [95% CI]", justify="right")
    for name, m in results["methods"].items():
        diffs = [interval(m[k]["diff"], m[k]["ci"], signed=True) if k in m else "" for k in shown]
        table.add_row(
            name, interval(m["em"], m["em_ci"]), f"{m['f1']:.3f}", str(m["empty"]), *diffs
        )  # fmt: skip
    console.print(table)
    for note in results.get("notes", {}).values():
        console.print(f"[dim]note: {note}[/dim]")


def print_quality_table(intervals: dict, console: Console | None = None) -> None:
    """Aggregate rationale quality per method with its interval and its paired difference to KD."""
    console = console or wide_console()
    reference = REFERENCES["vs_kd"]
    table = Table(
        title="rationale quality",
        caption="aggregate: the quality registry's aggregate of its aspects · per-aspect means: "
        "results.json quality.<method> · per rationale: quality.jsonl",
    )
    table.add_column("method", no_wrap=True)
    table.add_column("aggregate [95% CI]", justify="right")
    table.add_column(f"− {reference} [95% CI]", justify="right")
    for name, m in intervals.items():
        vs = m.get("vs_kd")
        diff = interval(vs["diff"], vs["ci"], signed=True) if vs else ""
        table.add_row(name, interval(m["aggregate"], m["aggregate_ci"]), diff)
    console.print(table)
