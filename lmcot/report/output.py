"""How the tables are written: a CSV of numbers per table, and report.md with the tables as
Markdown cells (mean ± std, intervals, the paper's EM) and the text that says how to read them."""

import csv
import re
from collections import defaultdict
from pathlib import Path

from lmcot.report.tables import PAPER_CITATION


def fmt(value: float, std: float | None = None) -> str:
    if value != value:  # nan: no value
        return ""
    return f"{value:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def shown(row: dict) -> dict:
    """A CSV row as Markdown cells: mean ± std, three decimals."""
    out = {}
    for k, v in row.items():
        if k.endswith("_std"):
            continue
        if isinstance(v, float):
            out[k] = fmt(v, row.get(f"{k}_std"))
        else:
            out[k] = "" if v is None else str(v)
    return out


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no runs hold the data for this table)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row[c] for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def fmt_tokens(value: float | None, std: float | None = None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" + (f" ± {std:.0f}" if std is not None else "")


def wide_main(rows: list[dict]) -> list[dict]:
    """methods x datasets, as in the paper: EM, F1, n, the paper's EM and the reader's and
    student's tokens per question, per dataset."""
    datasets = sorted({r["dataset"] for r in rows})
    out: dict[tuple, dict] = {}
    for r in rows:
        cells = out.setdefault((r["method"], r["setting"]), {"method": r["method"],
                                                             "setting": r["setting"]})  # fmt: skip
        for d in datasets:
            cells.setdefault(f"{d} EM", ""), cells.setdefault(f"{d} F1", "")
            cells.setdefault(f"{d} n×seeds", ""), cells.setdefault(f"{d} paper EM", "")
            cells.setdefault(f"{d} reader tok/q", ""), cells.setdefault(f"{d} student tok/q", "")
        shown_row = shown(r)
        cells[f"{r['dataset']} EM"], cells[f"{r['dataset']} F1"] = shown_row["em"], shown_row["f1"]
        cells[f"{r['dataset']} n×seeds"] = f"{r['n']}×{r['seeds']}"
        cells[f"{r['dataset']} paper EM"] = shown_row["paper_em"]
        for model in ("reader", "student"):
            column = f"{model}_tokens_per_q"
            cells[f"{r['dataset']} {model} tok/q"] = fmt_tokens(r[column], r[f"{column}_std"])
    return list(out.values())


def differences_md(rows: list[dict]) -> list[dict]:
    return [
        {"method": r["method"], "setting": r["setting"], "dataset": r["dataset"],
         "minus": r["baseline"], "EM difference [95% CI]":
         f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
         "questions (jobs)": f"{r['questions']} ({r['jobs']})",
         "separated": "yes" if r["interval_excludes_zero"] else "no"}
        for r in rows
    ]  # fmt: skip


def _signed(x: float) -> str:
    """``+.031`` rather than ``+0.031``: the matrix has a column per aspect."""
    return re.sub(r"^([+-])0\.", r"\1.", f"{x:+.3f}")


def matrix_md(rows: list[dict]) -> list[dict]:
    """The matrix as Markdown cells: ``diff [low, high]``, bold where the interval excludes 0,
    ``n=`` where a cell has fewer questions than its row."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["setting"], r["trained"]), {
            "dataset": r["dataset"], "setting": r["setting"], "aspects trained": r["trained"],
            "questions (jobs)": (0, 0)})  # fmt: skip
    for r in rows:
        cells = out[(r["dataset"], r["setting"], r["trained"])]
        cells["questions (jobs)"] = max(cells["questions (jobs)"], (r["questions"], r["jobs"]))
    for r in rows:
        cells = out[(r["dataset"], r["setting"], r["trained"])]
        cell = ""
        if r["diff"] is not None:
            cell = f"{_signed(r['diff'])} [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
            cell = f"**{cell}**" if r["interval_excludes_zero"] else cell
            if r["questions"] < cells["questions (jobs)"][0]:
                cell += f" n={r['questions']}"
        cells[r["aspect"]] = cell
    for cells in out.values():
        cells["questions (jobs)"] = "{} ({})".format(*cells["questions (jobs)"])
    return list(out.values())


def report_text(dirs, jobs, done, tables, plots: list[str], notes) -> str:
    """report.md: every table as Markdown, with what its cells mean, the plots and the notes."""
    readers = sorted({str(j.results.get("reader")) for j in done})
    teachers = sorted({str(j.choices.get("teacher", "?")) for j in done})
    precision = defaultdict(set)  # model -> the precisions its jobs ran in (newer runs)
    for job in done:
        for model, value in job.results.get("precision", {}).items():
            precision[model].add(str(value))
    precisions = "; ".join(f"{m} {', '.join(sorted(v))}" for m, v in precision.items())
    parts = [
        "# lmcot report\n",
        f"Multiruns: {', '.join(str(d) for d in dirs)}. Jobs: {len(jobs)}, finished "
        f"{len(done)}, missing or failed {len(jobs) - len(done)}.\n",
        f"Readers: {', '.join(readers) or '-'}. Teachers: {', '.join(teachers) or '-'}. "
        f"Precision: {precisions or 'not recorded'}. "
        "EM and F1 are mean ± sample std over seeds where there are several; n is questions "
        "per job × seeds.\n",
        "## Main table\n",
        f"Paper EM: {PAPER_CITATION}; its reader is not ours. `tok/q`: tokens the method asks "
        "per question (results.json `cost.<method>`, counted whether or not the cache served "
        "them), reader prompt + generated and student generated, mean ± std over seeds; empty "
        "for runs that predate cost.\n",
        markdown(wide_main(tables["main"])),
        "## EM differences (paired bootstrap 95% interval over questions; the seeds of a row "
        "resampled together by question)\n",
        "`separated`: the interval excludes zero. Any other difference is not supported by "
        "these runs.\n",
        markdown(differences_md(tables["differences"])),
        "## Aspect ablation (RL reward sets; greedy decoding)\n",
        markdown([shown(r) for r in tables["aspects"]]),
        "## Aspect matrix: RL − KD per aspect measured (greedy; paired 95% interval)\n",
        "Rows: the RL reward (`reward.aspects`) of the jobs; columns: each aspect's raw score and "
        "the aggregate in quality.jsonl. A cell is lm_guided_rl − lm_guided_kd of the same job "
        "over the questions both scored (`n=` where fewer than its row's), the seeds of a row "
        "resampled together by question. **Bold**: the interval excludes zero. Raw scales "
        "differ by aspect: read a cell against its column.\n",
        markdown(matrix_md(tables["aspect_matrix"])),
        "## Decoding\n",
        markdown([shown(r) for r in tables["decoding"]]),
        "## Model size\n",
        markdown([shown(r) for r in tables["model_sizes"]]),
        "## Plots\n",
        "\n".join(f"![{name}]({name})" for name in plots) or "(no runs hold the data for a plot)",
        "\n## Missing or failed jobs\n",
        markdown([shown(r) for r in tables["missing"]]),
    ]
    if notes:
        parts += ["## Notes\n", "\n".join(f"- {n}" for n in notes) + "\n"]
    return "\n".join(parts)
