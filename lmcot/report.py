"""Paper-style tables and plots over one or more multiruns, from the files the jobs left behind.

Usage::

    python -m lmcot.report outputs/train/multiruns/2025-01-01_12-00-00 [MORE_DIRS] [--out DIR]
        [--bootstrap-samples 2000] [--seed 0]

Every directory below the given ones that holds a ``.hydra/`` folder is a job. A job's
``results.json`` (with ``cost.<method>``: the tokens each method asks, where the run recorded
them), ``predictions.jsonl`` and ``quality.jsonl`` (per-rationale quality, with
``evaluate.rationale_quality=true``) give the numbers; its ``.hydra/config.yaml``,
``hydra.yaml`` and ``overrides.yaml`` say what it ran (dataset, student, reader, decoding,
reward aspects, seed). A job without ``results.json`` (failed, killed, still running) is listed
as missing with its overrides. No model is loaded, so re-running is cheap.

Written to ``--out`` (default: ``<first dir>/report``): ``report.md``, one CSV per table and
PNG plots, each plot only when the runs hold the data for it. Rows are labelled with the
overrides that vary between jobs (other than seed and the dataset), so jobs that differ are never
averaged together; jobs that differ only in seed are shown as mean ± std over seeds (sample std).
Differences of EM come from a paired bootstrap that resamples question ids over the jobs of a
row (``lmcot.stats.cluster_bootstrap_diff``): a drawn question brings every job's paired
difference on it, so seeds that answer the same questions add no resampling units. Jobs are
kept by their whole path, so several multiruns (with jobs named ``0``, ``1``, ... in each) can
be passed together; jobs that ran the same setting, dataset and seed are named in the notes.
The main table adds each method's EM interval and the reader's and student's tokens per
question (``em_vs_cost.png`` plots one against the other). The aspect ablation
(``sweeps=aspects``) gets a matrix: RL reward trained x aspect measured, each cell RL − KD of
the same jobs over the questions both scored, clustered by question like the EM differences.
docs/report.md describes every table.
"""

import argparse
import csv
import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from statistics import mean, stdev

import matplotlib
import numpy as np
from omegaconf import OmegaConf

from lmcot.stats import NUM_RESAMPLES, cluster_bootstrap_diff, cluster_bootstrap_mean

matplotlib.use("Agg")  # files only, never a window
from matplotlib import pyplot as plt  # noqa: E402

PAPER_CITATION = (
    "Lee et al., *Can Small Language Models Help Large Language Models Reason Better?: "
    "LM-Guided Chain-of-Thought*, LREC-COLING 2024 (arXiv:2404.03414), main results (EM)"
)
PAPER_EM = {  # dataset (as results.json names it) -> method -> EM reported in the paper
    "hotpotqa": {"standard": 0.500, "cot": 0.483, "lm_guided_kd": 0.507, "lm_guided_kd_sc": 0.513},
    "twowiki": {"standard": 0.500, "cot": 0.400, "lm_guided_kd": 0.506, "lm_guided_kd_sc": 0.524},
}
BASELINES = ("standard", "lm_guided_kd")  # every method's EM is compared with these
DECODING_SUFFIXES = {"_top_quality": "top_quality", "_sc": "sc"}  # method name suffix -> decoding
STUDENT_SIZES = {  # parameters of students whose name does not state them
    "flan-t5-small": 77e6, "flan-t5-base": 248e6, "flan-t5-large": 783e6, "flan-t5-xl": 2.85e9,
    "flan-t5-xxl": 11.3e9,
}  # fmt: skip


@dataclass
class Job:
    """One job directory of a multirun: what it ran and, if it finished, what it measured."""

    dir: Path
    overrides: list[str]
    config: dict
    choices: dict
    results: dict | None = None
    error: str = ""
    predictions: list[dict] = field(default_factory=list)
    quality_rows: list[dict] = field(default_factory=list)  # quality.jsonl: id, method, scores

    @classmethod
    def load(cls, job_dir: Path) -> "Job":
        hydra_dir = job_dir / ".hydra"

        def read_yaml(name: str) -> dict | list:
            path = hydra_dir / name
            if not path.exists():
                return {}
            return OmegaConf.to_container(OmegaConf.load(path), resolve=False)

        hydra = read_yaml("hydra.yaml")
        job = cls(
            job_dir, list(read_yaml("overrides.yaml") or []), read_yaml("config.yaml") or {},
            hydra.get("hydra", {}).get("runtime", {}).get("choices", {}) if hydra else {},
        )  # fmt: skip
        results = job_dir / "results.json"
        if not results.exists():
            job.error = "no results.json"
            return job
        try:
            job.results = json.loads(results.read_text())
            job.results["methods"]  # noqa: B018  (the stable schema: a KeyError if absent)
        except (json.JSONDecodeError, KeyError) as e:
            job.results, job.error = None, f"unreadable {results}: {e!r}"
            return job
        predictions = job_dir / "predictions.jsonl"
        if predictions.exists():
            job.predictions = [json.loads(line) for line in open(predictions) if line.strip()]
        quality = job_dir / "quality.jsonl"
        if quality.exists():
            job.quality_rows = [json.loads(line) for line in open(quality) if line.strip()]
            for k, row in enumerate(job.quality_rows, 1):
                if not {"id", "method"} <= row.keys():
                    raise ValueError(f"{quality} row {k}: expected keys id and method and one "
                                     f"score per aspect, got {sorted(row)}")  # fmt: skip
        return job

    @property
    def dataset(self) -> str:
        return self.results.get("data", "?")

    @property
    def seed(self):
        return self.config.get("seed")

    @cached_property
    def override_pairs(self) -> dict[str, str]:
        return dict(o.lstrip("+~").partition("=")[::2] for o in self.overrides)

    @property
    def student(self) -> str:
        """The student's ``name_or_path``; its config choice where that is an interpolation."""
        name = str(self.config.get("student", {}).get("name_or_path", ""))
        if "${" in name or not name:
            return str(self.choices.get("student", name))
        return Path(name).name if name.startswith("/") else name

    @property
    def aspects(self) -> str:
        return ",".join(self.config.get("reward", {}).get("aspects", []))

    def decoding(self, method: str) -> tuple[str, str, int]:
        """(student method, decoding label, samples per question) of an LM-guided method."""
        for suffix, decoding in DECODING_SUFFIXES.items():
            if method.endswith(suffix):
                k = int(self.config.get("decoding", {}).get(decoding, {}).get("num_samples", 0))
                return method[: -len(suffix)], f"{decoding} k={k}", k
        return method, "greedy", 1

    def cost_per_question(self, method: str, *fields: str) -> float | None:
        """Tokens of ``fields`` in ``cost.<method>`` per question (None: a run before cost)."""
        cost = self.results.get("cost", {}).get(method)
        if cost is None:
            return None
        return sum(cost[f] for f in fields) / self.results["methods"][method]["n"]

    @cached_property
    def quality_by_id(self) -> dict[str, dict[str, dict[str, float]]]:
        """Method -> aspect (and ``aggregate``) -> example id -> score, from ``quality.jsonl``;
        scores of None (the aspect did not apply to that rationale) are left out."""
        out: dict = defaultdict(lambda: defaultdict(dict))
        for row in self.quality_rows:
            for aspect, score in row.items():
                if aspect not in ("id", "method") and score is not None:
                    out[row["method"]][aspect][row["id"]] = score
        return out

    @cached_property
    def em_by_id(self) -> dict[str, dict[str, float]]:
        """Method -> example id -> EM, from ``predictions.jsonl``."""
        out: dict[str, dict[str, float]] = defaultdict(dict)
        for row in self.predictions:
            out[row["method"]][row["id"]] = row["em"]
        return out


def find_jobs(dirs: list[Path]) -> list[Job]:
    """Every job below ``dirs`` (a directory with a ``.hydra`` folder), in path order."""
    job_dirs = sorted({h.parent for d in dirs for h in Path(d).rglob(".hydra") if h.is_dir()})
    return [Job.load(d) for d in job_dirs]


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys that label rows: those that differ between jobs, except seed and dataset."""
    keys = sorted({k for job in jobs for k in job.override_pairs})
    by_dataset = defaultdict(list)
    for job in jobs:
        by_dataset[job.dataset].append(job)

    def varies(key: str, group: list[Job]) -> bool:
        return len({job.override_pairs.get(key) for job in group}) > 1

    return [
        k for k in keys
        if k != "seed" and varies(k, jobs) and any(varies(k, g) for g in by_dataset.values())
    ]  # fmt: skip


def setting(job: Job, keys: list[str], shown: tuple[str, ...] = ()) -> str:
    """The job's values of ``keys``, leaving out those a table already has a column for."""
    pairs = job.override_pairs
    return " ".join(f"{k}={pairs[k]}" for k in keys if k in pairs and not k.startswith(shown))


def over_seeds(samples: list[tuple[object, float | None]]) -> tuple[float, float | None, int]:
    """Mean and sample std over seeds; repeated jobs of one seed count once (their mean)."""
    by_seed = defaultdict(list)
    for seed, value in samples:
        if value is not None:
            by_seed[seed].append(value)
    per_seed = [mean(v) for v in by_seed.values()]
    if not per_seed:
        return float("nan"), None, 0
    return mean(per_seed), stdev(per_seed) if len(per_seed) > 1 else None, len(per_seed)


def fmt(value: float, std: float | None = None, signed: bool = False) -> str:
    if value != value:  # nan: no value
        return ""
    sign = "+" if signed else ""
    return f"{value:{sign}.3f}" + (f" ± {std:.3f}" if std is not None else "")


Members = list[tuple[Job, str]]  # (job, method name) pairs that form one table row


def group(jobs: list[Job], key: Callable[[Job, str], tuple | None]) -> dict[tuple, Members]:
    groups: dict[tuple, Members] = defaultdict(list)
    for job in jobs:
        for method in job.results["methods"]:
            k = key(job, method)
            if k is not None:
                groups[k].append((job, method))
    return groups


def stat(members: Members, value: Callable[[Job, str], float | None]):
    return over_seeds([(job.seed, value(job, method)) for job, method in members])


def em(job: Job, method: str) -> float:
    return job.results["methods"][method]["em"]


def f1(job: Job, method: str) -> float:
    return job.results["methods"][method]["f1"]


def scores(members: Members) -> dict:
    """EM and F1 columns (mean, std over seeds), n and seeds of a row, for CSV."""
    em_mean, em_std, seeds = stat(members, em)
    f1_mean, f1_std, _ = stat(members, f1)
    ns = sorted({job.results["methods"][m]["n"] for job, m in members})
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return {"em": em_mean, "em_std": em_std, "f1": f1_mean, "f1_std": f1_std, "n": n,
            "seeds": seeds}  # fmt: skip


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


# ---- tables: each returns CSV rows (numbers) --------------------------------------------------


READER_TOKENS = ("reader_prompt_tokens", "reader_new_tokens")


def main_table(jobs: list[Job], keys: list[str], samples: int, seed: int) -> list[dict]:
    """EM, F1, the EM interval, the paper's EM and the tokens asked per question of each method
    and setting."""
    groups = group(jobs, lambda job, m: (m, setting(job, keys), job.dataset))
    rows = []
    for (m, s, d), members in groups.items():
        lo, hi = em_interval(members, samples, seed)
        row = {"method": m, "setting": s, "dataset": d, **scores(members),
               "paper_em": PAPER_EM.get(d, {}).get(m),
               "em_ci_low": lo, "em_ci_high": hi}  # fmt: skip
        for model, fields in (("reader", READER_TOKENS), ("student", ("student_new_tokens",))):
            value, std, _ = stat(members, lambda j, m, f=fields: j.cost_per_question(m, *f))
            column = f"{model}_tokens_per_q"
            row[column], row[f"{column}_std"] = (None if value != value else value), std
        rows.append(row)
    return rows


def em_interval(members: Members, samples: int, seed: int) -> tuple[float | None, float | None]:
    """The 95% interval of a row's EM: the job's ``em_ci``, or over several jobs (seeds) a
    question-cluster bootstrap of the mean EM (None where a job has no predictions of it)."""
    if len(members) == 1:
        job, method = members[0]
        return tuple(job.results["methods"][method].get("em_ci") or (None, None))
    scored = [job.em_by_id.get(method) for job, method in members]
    if not all(scored):
        return None, None
    return cluster_bootstrap_mean(scored, samples, seed)[1]


def differences(jobs: list[Job], keys: list[str], samples: int, seed: int, notes: list) -> list:
    """EM difference of every method to each baseline with a question-cluster bootstrap over
    the jobs (seeds) of a row: each job's pairs are kept, a question is drawn as one unit."""
    groups = group(jobs, lambda job, m: (m, setting(job, keys), job.dataset))
    rows = []
    for (method, label, dataset), members in groups.items():
        for baseline in BASELINES:
            if method in BASELINES[: BASELINES.index(baseline) + 1]:
                continue  # itself, or the negative of a row already there (standard - KD)
            pairs = [(job, m) for job, m in members if baseline in job.em_by_id]
            if not pairs:
                continue
            try:
                for job, m in pairs:
                    if m not in job.em_by_id:
                        raise ValueError(f"{job.dir / 'predictions.jsonl'} has no rows of {m}")
                paired = [(job.em_by_id[m], job.em_by_id[baseline]) for job, m in pairs]
                diff, (lo, hi), questions = cluster_bootstrap_diff(paired, samples, seed)
            except ValueError as e:
                jobs_named = ", ".join(f"{k}: {job.dir}" for k, (job, _) in enumerate(pairs))
                notes.append(f"{method} vs {baseline} ({dataset} {label}): {e} ({jobs_named})")
                continue
            rows.append({
                "method": method, "setting": label, "dataset": dataset, "baseline": baseline,
                "diff": diff, "ci_low": lo, "ci_high": hi, "questions": questions,
                "jobs": len(pairs), "interval_excludes_zero": lo > 0 or hi < 0,
            })  # fmt: skip
    return rows


def repeated_jobs(jobs: list[Job], keys: list[str]) -> list[str]:
    """Notes on jobs that ran the setting, dataset and seed of another job (a multirun passed
    twice, or two multiruns of one command): means count them as one seed."""
    by_label = defaultdict(list)
    for job in jobs:
        by_label[(setting(job, keys), job.dataset, job.seed)].append(job)
    return [
        f"{len(same)} jobs ran {' '.join(map(str, filter(None, (dataset, label))))} "
        f"seed={seed}: means count them as one seed (their mean), the paired intervals keep "
        f"every job's pairs: {', '.join(str(job.dir) for job in same)}"
        for (label, dataset, seed), same in by_label.items() if len(same) > 1
    ]  # fmt: skip


def quality_aspects(jobs: list[Job]) -> list[str]:
    """Every aspect in ``quality.<method>`` of any job, in the order first seen."""
    return list(dict.fromkeys(
        a for job in jobs for q in job.results.get("quality", {}).values() for a in q
    ))  # fmt: skip


def aspect_table(jobs: list[Job], keys: list[str], aspects: list[str]) -> list[dict]:
    """One row per RL reward set (and KD as the reference), with per-aspect rationale quality."""

    def key(job: Job, method: str):
        if not method.startswith(("lm_guided_rl", "lm_guided_kd")):
            return None
        if job.decoding(method)[1] != "greedy":
            return None
        reward = job.aspects if method.startswith("lm_guided_rl") else "(KD, no RL)"
        return job.dataset, method, reward, setting(job, keys, ("reward",))

    rl_jobs = [j for j in jobs if any(m.startswith("lm_guided_rl") for m in j.results["methods"])]
    rows = []
    for (dataset, method, reward, label), members in group(rl_jobs, key).items():
        row = {"dataset": dataset, "method": method, "reward_aspects": reward, "setting": label,
               **scores(members)}  # fmt: skip
        for aspect in aspects:
            row[aspect], row[f"{aspect}_std"], _ = stat(
                members, lambda j, m, a=aspect: _quality(j, m, a)
            )
        rows.append(row)
    return rows


def _quality(job: Job, method: str, aspect: str) -> float | None:
    return job.results.get("quality", {}).get(method, {}).get(aspect)


MATRIX_PAIR = ("lm_guided_rl", "lm_guided_kd")  # greedy RL minus greedy KD of the same job


def trained_label(aspects: list[str], measured: list[str]) -> str:
    """A job's ``reward.aspects`` as a row label: ``all N`` (+ ``task``) when it is every
    rationale aspect measured, else the aspects themselves."""
    rationale = [a for a in measured if a not in ("task", "aggregate")]
    if len(rationale) > 1 and set(aspects) == set(rationale):
        return f"all {len(rationale)}"
    if len(rationale) > 1 and set(aspects) == {*rationale, "task"}:
        return f"all {len(rationale)} + task"
    return ",".join(aspects) or "(no reward.aspects)"


def aspect_matrix(jobs: list[Job], keys: list[str], samples: int, seed: int,
                  notes: list) -> list[dict]:  # fmt: skip
    """The aspect ablation's matrix, one CSV row per cell: aspect set trained (``reward.aspects``)
    x aspect measured (``quality.jsonl``), the paired RL − KD difference over the questions both
    scored, a question-cluster bootstrap over the jobs (seeds) of a row. Single-aspect rows come
    first, in the columns' order, so the diagonal is the diagonal."""
    rl, kd = MATRIX_PAIR
    scored = [job for job in jobs if rl in job.quality_by_id]
    paired = [job for job in scored if kd in job.quality_by_id]
    notes += [f"{job.dir}: quality.jsonl scores {rl} but not {kd}: not in the aspect matrix"
              for job in scored if kd not in job.quality_by_id]  # fmt: skip
    measured = list(dict.fromkeys(
        a for job in paired for m in MATRIX_PAIR for a in job.quality_by_id[m] if a != "aggregate"
    ))  # fmt: skip
    measured += ["aggregate"] if any("aggregate" in j.quality_by_id[rl] for j in paired) else []
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in paired:
        trained = trained_label(job.config.get("reward", {}).get("aspects", []), measured)
        groups[(job.dataset, setting(job, keys, ("reward",)), trained)].append(job)
    order = sorted(groups, key=lambda k: (k[0], k[1], measured.index(k[2])
                                          if k[2] in measured else len(measured)))  # fmt: skip
    rows = []
    for dataset, label, trained in order:
        members = groups[(dataset, label, trained)]
        for aspect in measured:
            pairs = []
            for job in members:
                a, b = job.quality_by_id[rl].get(aspect, {}), job.quality_by_id[kd].get(aspect, {})
                if shared := a.keys() & b.keys():
                    pairs.append(({i: a[i] for i in shared}, {i: b[i] for i in shared}))
            row = {"dataset": dataset, "setting": label, "trained": trained, "aspect": aspect,
                   "diff": None, "ci_low": None, "ci_high": None, "questions": 0,
                   "jobs": len(pairs), "interval_excludes_zero": None}  # fmt: skip
            if pairs:
                diff, (lo, hi), questions = cluster_bootstrap_diff(pairs, samples, seed)
                row |= {"diff": diff, "ci_low": lo, "ci_high": hi, "questions": questions,
                        "interval_excludes_zero": lo > 0 or hi < 0}  # fmt: skip
            rows.append(row)
    return rows


def decoding_table(jobs: list[Job], keys: list[str]) -> list[dict]:
    """One row per student method and decoding (greedy, sc k, top_quality k)."""

    def key(job: Job, method: str):
        if not method.startswith("lm_guided_"):
            return None
        student_method, label, k = job.decoding(method)
        return job.dataset, student_method, label, k, setting(job, keys, ("decoding",))

    rows = [
        {"dataset": d, "method": sm, "decoding": label, "samples": k, "setting": s,
         **scores(members)}
        for (d, sm, label, k, s), members in group(jobs, key).items()
    ]  # fmt: skip
    # greedy first, then each decoding by number of samples
    order = {"greedy": 0, "sc": 1, "top_quality": 2}
    return sorted(rows, key=lambda r: (r["dataset"], r["method"],
                                       order[r["decoding"].split()[0]], r["samples"]))  # fmt: skip


def student_size(name: str) -> float:
    """Parameters of a student, from the name ("SmolLM2-135M", "Qwen2.5-0.5B") or known sizes."""
    lowered = name.lower()
    for known, size in STUDENT_SIZES.items():
        if lowered.endswith(known):
            return size
    match = re.search(r"(\d+(?:\.\d+)?)([mb])(?![a-z])", lowered)
    return float(match[1]) * (1e6 if match[2] == "m" else 1e9) if match else float("inf")


def size_table(jobs: list[Job], keys: list[str]) -> list[dict]:
    groups = group(jobs, lambda job, m: (job.dataset, m, job.student,
                                         setting(job, keys, ("student",)))
                   if m.startswith("lm_guided_") else None)  # fmt: skip
    rows = [
        {"dataset": d, "method": m, "student": st, "setting": s, **scores(members)}
        for (d, m, st, s), members in groups.items()
    ]
    return sorted(rows, key=lambda r: (r["dataset"], r["method"], student_size(r["student"])))


# ---- plots: each writes a PNG only when the rows hold what it needs ---------------------------


def _paper_line(ax, dataset: str, method: str) -> None:
    """The paper's EM for ``method`` on ``dataset`` as a dashed line, once per plot."""
    paper = PAPER_EM.get(dataset, {}).get(method)
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


# ---- output ----------------------------------------------------------------------------------


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
    text = _report_text(dirs, jobs, done, tables, written, notes)
    path = out / "report.md"
    path.write_text(text)
    return path


def _report_text(dirs, jobs, done, tables, plots: list[str], notes) -> str:
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


if __name__ == "__main__":
    main()
