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


# top-level config nodes that name or log a run and change nothing it computes
BOOKKEEPING = ("seed", "sweep", "tags", "notes", "logger")
ABSENT = object()


def canonical(value) -> str:
    """One spelling per value, so values are compared, not their text: ``0`` and ``0.0`` are
    one number, a list keeps its order, a mapping does not."""

    def plain(v):
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return str(v)

    return json.dumps(plain(value), sort_keys=True)


def shown_value(text: str) -> str:
    """A :func:`canonical` value as a command line spells it: ``[task]``, ``32``, ``0.0003``."""

    def show(v) -> str:
        if isinstance(v, list):
            return "[" + ",".join(map(show, v)) + "]"
        if isinstance(v, float):
            return str(int(v)) if v.is_integer() else repr(v)
        if isinstance(v, dict):
            return json.dumps(v, sort_keys=True)
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return show(json.loads(text))


def flatten(node, prefix: str = "") -> dict[str, object]:
    """Dotted path -> value of every leaf of a config (a list is one leaf)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return out


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

    def config_node(self, key: str):
        """The config's node at a dotted ``key``, or ``ABSENT``."""
        node = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return ABSENT
            node = node[part]
        return node

    def is_config_value(self, key: str) -> bool:
        """Whether ``key`` names a value in the job's config (not a config group)."""
        node = self.config_node(key)
        return key not in self.choices and node is not ABSENT and not isinstance(node, dict)

    def value(self, key: str) -> str | None:
        """What the job ran for an override key, :func:`canonical`: a group's choice, else the
        config's value, else (a group not in ``hydra.yaml``'s choices) the override as given;
        None where the job has none."""
        if key in self.choices:  # None: the group was left empty
            return None if self.choices[key] is None else canonical(self.choices[key])
        node = self.config_node(key)
        if node is ABSENT or isinstance(node, dict):
            given = self.override_pairs.get(key)
            return None if given is None else canonical(given)
        return canonical(node)

    @cached_property
    def leaves(self) -> dict[str, str]:
        """Every config value (:func:`canonical`) by dotted path, bookkeeping left out."""
        kept = {k: v for k, v in self.config.items() if k not in BOOKKEEPING}
        return {path: canonical(v) for path, v in flatten(kept).items()}

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
    """Keys that label rows: those whose resolved values differ between jobs of one dataset,
    except seed, so that jobs that differ are never averaged together and jobs that ran the
    same configuration share a row, whatever overrides spelt it.

    Candidates are every job's overrides, compared by the value the job ran (a group by its
    choice, a value by its config: ``kl.coef=0`` given on the command line and a default of
    ``0.0`` are one setting). A group whose choice changed nothing in the jobs' configs
    (``sweeps=aspects`` against a lone run of the same cell) labels nothing. Config values that
    still differ between jobs sharing a label (defaults changed between two code versions) are
    added as keys of their own."""
    datasets = defaultdict(list)
    for job in jobs:
        datasets[job.dataset_label].append(job)

    def varies(key: str) -> bool:
        return any(len({job.value(key) for job in same}) > 1 for same in datasets.values())

    overridden = sorted({k for job in jobs for k in job.override_pairs} - {"seed"})
    keys = [k for k in overridden if varies(k)]
    values = [k for k in keys if any(job.is_config_value(k) for job in jobs)]
    keys = [k for k in keys if k in values or changes_config(k, values, datasets.values())]
    labelled = defaultdict(list)
    for job in jobs:
        labelled[(job.dataset_label, *(job.value(k) for k in keys))].append(job)
    drifted = {
        path for same in labelled.values() for path in set.intersection(
            *(set(job.leaves) for job in same)
        ) if len({job.leaves[path] for job in same}) > 1
    }  # fmt: skip
    return keys + sorted(drifted - set(keys))


def changes_config(group: str, values: list[str], datasets) -> bool:
    """Whether the choices of a config ``group`` ran different configs: two choices are one
    where jobs of one dataset that made them ran the same config beyond the varying ``values``
    (which label rows themselves). Dropping a group is safe: what still differs between jobs
    that share a label is labelled by :func:`varying_keys` from their configs."""

    def rest(job: Job) -> dict:
        return {p: v for p, v in job.leaves.items()
                if not any(p == k or p.startswith(k + ".") for k in values)}  # fmt: skip

    same_as: dict = {}  # choice -> a choice it ran the same config as (union-find)

    def root(choice):
        while same_as.setdefault(choice, choice) != choice:
            choice = same_as[choice]
        return choice

    for jobs in datasets:
        runs = [(job.value(group), rest(job)) for job in jobs]
        for i, (a, x) in enumerate(runs):
            for b, y in runs[i + 1 :]:
                if root(a) != root(b) and x == y:
                    same_as[root(a)] = root(b)
    return len({root(choice) for choice in list(same_as)}) > 1


def setting(job: Job, keys: list[str], shown: tuple[str, ...] = ()) -> str:
    """The job's values of ``keys``, leaving out those a table already has a column for."""
    values = {k: job.value(k) for k in keys if not k.startswith(shown)}
    return " ".join(f"{k}={shown_value(v)}" for k, v in values.items() if v is not None)


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
