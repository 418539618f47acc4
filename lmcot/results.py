"""What a run leaves behind: ``results.json``, ``predictions.jsonl`` and a table on screen.

``results.json`` has a stable core (DESIGN.md §4): ``n`` and ``methods.<name>.em|f1|n``;
``report`` gathers these files across a multirun.
"""

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmcot.methods import Prediction


def summarize(predictions: list[Prediction]) -> dict:
    """Mean EM and F1 per method, in the order methods first appear."""
    by_method: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        by_method[p.method].append(p)
    return {
        name: {
            "em": sum(p.em for p in preds) / len(preds),
            "f1": sum(p.f1 for p in preds) / len(preds),
            "n": len(preds),
        }
        for name, preds in by_method.items()
    }


def write(output_dir: str | Path, results: dict, predictions: list[Prediction]) -> Path:
    """Write ``results.json`` and ``predictions.jsonl`` into ``output_dir``; return the first."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "predictions.jsonl", "w") as f:
        for p in predictions:
            f.write(json.dumps(asdict(p)) + "\n")
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def print_table(results: dict, console: Console | None = None) -> None:
    """Print EM and F1 per method, as in the paper's tables."""
    console = console or Console()
    table = Table(title=f"{results['data']} · n={results['n']} · reader {results['reader']}")
    table.add_column("method")
    table.add_column("EM", justify="right")
    table.add_column("F1", justify="right")
    for name, m in results["methods"].items():
        table.add_row(name, f"{m['em']:.3f}", f"{m['f1']:.3f}")
    console.print(table)
    for note in results.get("notes", {}).values():
        console.print(f"[dim]note: {note}[/dim]")
