"""The report's tables, each as CSV rows of numbers (:mod:`lmcot.report.output` formats them):
kept apart from formatting so that the CSVs hold full precision and the plots read the same rows.

Differences of EM come from a paired bootstrap that resamples question ids over the jobs of a
row (``lmcot.stats.cluster_bootstrap_diff``): a drawn question brings every job's paired
difference on it, so seeds that answer the same questions add no resampling units. The main
table adds each method's EM interval and the reader's and student's tokens per question. The
aspect ablation (``sweeps=aspects``) gets a matrix: RL reward trained x aspect measured, each cell
RL − KD of the same jobs over the questions both scored, clustered by question like the EM
differences. docs/report.md describes every table.
"""

import re
from collections import defaultdict

from lmcot.report.jobs import Job, Members, data_name, group, scores, setting, stat
from lmcot.stats import cluster_bootstrap_diff, cluster_bootstrap_mean

PAPER_CITATION = (
    "Lee et al., *Can Small Language Models Help Large Language Models Reason Better?: "
    "LM-Guided Chain-of-Thought*, LREC-COLING 2024 (arXiv:2404.03414), main results (EM)"
)
PAPER_EM = {  # dataset (results.json ``data``) -> method -> EM reported in the paper
    "hotpotqa": {"standard": 0.500, "cot": 0.483, "lm_guided_kd": 0.507, "lm_guided_kd_sc": 0.513},
    "twowiki": {"standard": 0.500, "cot": 0.400, "lm_guided_kd": 0.506, "lm_guided_kd_sc": 0.524},
}


def paper_em(dataset: str, method: str) -> float | None:
    """The paper's EM of ``method`` on a dataset, by its name or its label (``hotpotqa/dev``)."""
    return PAPER_EM.get(data_name(dataset), {}).get(method)


BASELINES = ("standard", "lm_guided_kd")  # every method's EM is compared with these
STUDENT_SIZES = {  # parameters of students whose name does not state them
    "flan-t5-small": 77e6, "flan-t5-base": 248e6, "flan-t5-large": 783e6, "flan-t5-xl": 2.85e9,
    "flan-t5-xxl": 11.3e9,
}  # fmt: skip
READER_TOKENS = ("reader_prompt_tokens", "reader_new_tokens")  # the reader's cost.<method>


def main_table(jobs: list[Job], keys: list[str], samples: int, seed: int) -> list[dict]:
    """EM, F1, the EM interval, the paper's EM and the tokens asked per question of each method
    and setting."""
    groups = group(jobs, lambda job, m: (m, setting(job, keys), job.dataset_label))
    rows = []
    for (m, s, d), members in groups.items():
        lo, hi = em_interval(members, samples, seed)
        row = {"method": m, "setting": s, "dataset": d, **scores(members),
               "paper_em": paper_em(d, m),
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
    groups = group(jobs, lambda job, m: (m, setting(job, keys), job.dataset_label))
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


def aspect_table(jobs: list[Job], keys: list[str], aspects: list[str]) -> list[dict]:
    """One row per RL reward set (and KD as the reference), with per-aspect rationale quality."""

    def key(job: Job, method: str):
        if not method.startswith(("lm_guided_rl", "lm_guided_kd")):
            return None
        if job.decoding(method)[1] != "greedy":
            return None
        reward = job.aspects if method.startswith("lm_guided_rl") else "(KD, no RL)"
        return job.dataset_label, method, reward, setting(job, keys, ("reward",))

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
        groups[(job.dataset_label, setting(job, keys, ("reward",)), trained)].append(job)
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
        return job.dataset_label, student_method, label, k, setting(job, keys, ("decoding",))

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
    groups = group(jobs, lambda job, m: (job.dataset_label, m, job.student,
                                         setting(job, keys, ("student",)))
                   if m.startswith("lm_guided_") else None)  # fmt: skip
    rows = [
        {"dataset": d, "method": m, "student": st, "setting": s, **scores(members)}
        for (d, m, st, s), members in groups.items()
    ]
    return sorted(rows, key=lambda r: (r["dataset"], r["method"], student_size(r["student"])))
