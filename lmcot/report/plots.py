"""The report's PNG plots, drawn from the tables' rows: each is written only when the rows hold
what it needs, so a sweep that did not vary students (say) gets no empty size plot."""

from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

from lmcot.report.tables import paper_em, student_size

matplotlib.use("Agg")  # files only, never a window
from matplotlib import pyplot as plt  # noqa: E402


def _paper_line(ax, dataset: str, method: str) -> None:
    """The paper's EM for ``method`` on ``dataset`` (a label: ``hotpotqa/validation``) as a
    dashed line, once per plot."""
    paper = paper_em(dataset, method)
    label = f"paper: {dataset} {method} {paper:.3f}" if paper is not None else None
    if label and label not in ax.get_legend_handles_labels()[1]:
        ax.axhline(paper, linestyle="--", linewidth=1, color="grey", label=label)


def _lines(rows: list[dict], x: str, series: tuple[str, ...]) -> dict[tuple, list[dict]]:
    lines = defaultdict(list)
    for row in rows:
        lines[tuple(row[s] for s in series)].append(row)
    return {k: v for k, v in lines.items() if len({r[x] for r in v}) > 1}


def plot_sizes(rows: list[dict], path: Path) -> bool:
    lines = _lines(rows, "student", ("dataset", "method", "setting"))
    if not lines:
        return False
    students = sorted({r["student"] for v in lines.values() for r in v}, key=student_size)
    fig, ax = plt.subplots(figsize=(7, 4))
    for (dataset, method, label), points in lines.items():
        ax.errorbar([students.index(r["student"]) for r in points], [r["em"] for r in points],
                    yerr=[r["em_std"] or 0 for r in points], marker="o", capsize=3,
                    label=" ".join(filter(None, (dataset, method, label))))  # fmt: skip
        _paper_line(ax, dataset, method)
    ax.set_xticks(range(len(students)), students, rotation=20, fontsize=7)
    ax.set(xlabel="student (ordered by size)", ylabel="EM", title="EM vs student size")
    return _save(fig, ax, path)


def plot_sc_samples(rows: list[dict], path: Path) -> bool:
    rows = [r for r in rows if r["decoding"] == "greedy" or r["decoding"].startswith("sc ")]
    lines = _lines(rows, "samples", ("dataset", "method", "setting"))
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for (dataset, method, label), points in lines.items():
        points = sorted(points, key=lambda r: r["samples"])
        ax.errorbar([r["samples"] for r in points], [r["em"] for r in points],
                    yerr=[r["em_std"] or 0 for r in points], marker="o", capsize=3,
                    label=" ".join(filter(None, (dataset, method, label))))  # fmt: skip
        _paper_line(ax, dataset, method)
        _paper_line(ax, dataset, f"{method}_sc")
    ax.set_xticks(sorted({r["samples"] for points in lines.values() for r in points}))
    ax.set(xlabel="rationales per question (1 = greedy, else SC with k samples)", ylabel="EM",
           title="EM vs self-consistency samples")  # fmt: skip
    return _save(fig, ax, path)


def plot_aspects(rows: list[dict], aspects: list[str], path: Path) -> bool:
    rows = [r for r in rows if any(r.get(a) == r.get(a) for a in aspects)]  # some quality
    if (
        not aspects
        or not any(r["method"].startswith("lm_guided_rl") for r in rows)
        or not any(r["method"].startswith("lm_guided_kd") for r in rows)
    ):
        return False
    fig, ax = plt.subplots(figsize=(max(7, len(aspects) * 1.2), 4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        ax.bar([j + i * width for j in range(len(aspects))], [row[a] for a in aspects], width,
               label=f"{row['dataset']} {row['method']} [{row['reward_aspects']}] "
                     f"{row['setting']}")  # fmt: skip
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(aspects))], aspects, fontsize=7)
    ax.set(ylabel="mean score", title="rationale quality per aspect: KD vs RL")
    return _save(fig, ax, path)


def plot_cost(rows: list[dict], path: Path) -> bool:
    """EM against the reader tokens a method asks per question, one labelled point per main
    table row, coloured by dataset; bars are the rows' EM intervals."""
    rows = [r for r in rows if r["reader_tokens_per_q"] is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dataset in sorted({r["dataset"] for r in rows}):
        points = [r for r in rows if r["dataset"] == dataset]
        bars = [[r["em"] - r["em_ci_low"] if r["em_ci_low"] is not None else 0 for r in points],
                [r["em_ci_high"] - r["em"] if r["em_ci_high"] is not None else 0
                 for r in points]]  # fmt: skip
        x = [r["reader_tokens_per_q"] for r in points]
        ax.errorbar(x, [r["em"] for r in points], yerr=bars, fmt="o", capsize=3, label=dataset)
        for xi, r in zip(x, points):
            ax.annotate(" ".join(filter(None, (r["method"], r["setting"]))), (xi, r["em"]),
                        xytext=(4, 4), textcoords="offset points", fontsize=6)  # fmt: skip
    x = [r["reader_tokens_per_q"] for r in rows]
    if min(x) > 0 and max(x) / min(x) >= 10:
        ax.set_xscale("log")
    ax.set(xlabel="reader tokens per question (prompt + generated, asked; mean over seeds)",
           ylabel="EM (bars: 95% interval)", title="EM vs reader cost")  # fmt: skip
    return _save(fig, ax, path)


def plot_aspect_matrix(rows: list[dict], path: Path) -> bool:
    """The aspect matrix as a heatmap per dataset and setting: colour = RL − KD (one symmetric
    scale for all cells), each cell annotated, separated cells starred and framed."""
    if not any(r["diff"] is not None for r in rows):
        return False
    panels: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        panels[(r["dataset"], r["setting"])].append(r)
    aspects = list(dict.fromkeys(r["aspect"] for r in rows))
    limit = max(abs(r["diff"]) for r in rows if r["diff"] is not None) or 1.0
    heights = [0.45 * len({r["trained"] for r in cells}) + 1.8 for cells in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.1 * len(aspects) + 3, sum(heights)),
                             height_ratios=heights, squeeze=False)  # fmt: skip
    for ax, ((dataset, label), cells) in zip(axes[:, 0], panels.items()):
        trained = list(dict.fromkeys(r["trained"] for r in cells))
        grid = np.full((len(trained), len(aspects)), np.nan)
        for r in cells:
            if r["diff"] is None:
                continue
            y, x = trained.index(r["trained"]), aspects.index(r["aspect"])
            grid[y, x] = r["diff"]
            separated = r["interval_excludes_zero"]
            ax.text(x, y, f"{r['diff']:+.3f}" + ("*" if separated else ""), ha="center",
                    va="center", fontsize=7, fontweight="bold" if separated else "normal",
                    color="white" if abs(r["diff"]) > 0.6 * limit else "black")  # fmt: skip
            if separated:
                ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, linewidth=1.5))
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(aspects)), aspects, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(trained)), trained, fontsize=7)
        ax.set(xlabel="aspect measured", ylabel="RL reward (aspects trained)",
               title=f"RL − KD, greedy ({' '.join(filter(None, (dataset, label)))}); "
                     "* = 95% interval excludes 0")  # fmt: skip
        fig.colorbar(image, ax=ax, label="RL − KD (raw score)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _save(fig, ax, path: Path) -> bool:
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
