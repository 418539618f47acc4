"""The jobs of one or more multiruns, read back from the files they left behind, and the
grouping of their methods into table rows: every table is built from these.

Every directory below the given ones that holds a ``.hydra/`` folder is a job. A job's
``results.json`` (with ``cost.<method>``: the tokens each method asks, where the run recorded
them), ``predictions.jsonl`` and ``quality.jsonl`` (per-rationale quality, with
``evaluate.rationale_quality=true``) give the numbers; its ``.hydra/config.yaml``,
``hydra.yaml`` and ``overrides.yaml`` say what it ran (dataset, student, reader, decoding,
reward aspects, seed). A job's dataset is shown with the split its questions came from
(``results.json`` ``split``, a file by its name: ``hotpotqa/validation``, ``synthetic/dev``), so
a dev number is never read as an evaluation-split number and jobs on different splits are never
averaged; results from before ``split`` keep the bare dataset name. A job without
``results.json`` (failed, killed, still running) is listed as missing with its overrides. Jobs
are kept by their whole path, so several multiruns (with jobs named ``0``, ``1``, ... in each)
can be passed together; jobs that ran the same setting, dataset and seed are named in the
notes.
"""

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from statistics import mean, stdev

from omegaconf import OmegaConf

DECODING_SUFFIXES = {"_top_quality": "top_quality", "_sc": "sc"}  # method name suffix -> decoding
SPLIT_SEPARATOR = "/"  # dataset label = data name + "/" + split; data names are module names


def dataset_label(data: str, split: str | None) -> str:
    """``data/split`` (``hotpotqa/validation``; a file split by its file name,
    ``hotpotqa/hotpot_dev_distractor_v1.json``), or ``data`` alone where the split is unknown."""
    name = (Path(split).name or split) if split else ""
    return f"{data}{SPLIT_SEPARATOR}{name}" if name else data


def data_name(label: str) -> str:
    """The data name of a dataset label (``hotpotqa/validation`` -> ``hotpotqa``), to look up
    what is known per dataset, such as the paper's EM."""
    return label.partition(SPLIT_SEPARATOR)[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
            job.predictions = read_jsonl(predictions)
        quality = job_dir / "quality.jsonl"
        if quality.exists():
            job.quality_rows = read_jsonl(quality)
            for k, row in enumerate(job.quality_rows, 1):
                if not {"id", "method"} <= row.keys():
                    raise ValueError(f"{quality} row {k}: expected keys id and method and one "
                                     f"score per aspect, got {sorted(row)}")  # fmt: skip
        return job

    @property
    def dataset(self) -> str:
        """The data loader (``results.json`` ``data``: ``hotpotqa``, ``twowiki``, ...)."""
        return self.results.get("data", "?")

    @property
    def split(self) -> str | None:
        """The split the questions came from, or the ``data.path`` file as given; None for
        results that do not say (older runs, a loader without splits)."""
        return self.results.get("split")

    @property
    def dataset_label(self) -> str:
        """The dataset as tables and plots show and group it: ``dataset/split``."""
        return dataset_label(self.dataset, self.split)

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
    """Override keys that label rows: those that differ between jobs, except seed and dataset,
    so that jobs that differ are never averaged together."""
    keys = sorted({k for job in jobs for k in job.override_pairs})
    by_dataset = defaultdict(list)
    for job in jobs:
        by_dataset[job.dataset_label].append(job)

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


def repeated_jobs(jobs: list[Job], keys: list[str]) -> list[str]:
    """Notes on jobs that ran the setting, dataset and seed of another job (a multirun passed
    twice, or two multiruns of one command): means count them as one seed."""
    by_label = defaultdict(list)
    for job in jobs:
        by_label[(setting(job, keys), job.dataset_label, job.seed)].append(job)
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
