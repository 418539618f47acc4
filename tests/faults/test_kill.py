"""kill -9 at seeded points of every stage and of a multirun, then the same command again: the
re-run must finish with exactly the uninterrupted run's artifact and leave nothing half-written.

Each trial is a real `python train.py` process killed (SIGKILL, its whole process group) a
seeded delay after the log line that opens the stage under test, drawn uniformly over the time
the uninterrupted reference run spent in that stage. A trial starts from the reference run's
cache without the artifacts of the stage under test and later ones, and without LM or reward
caches, so it redoes that stage as a first run would, and runs up to that stage only: a killed
distill or refine must re-export the reference's student (the same weights up to float
rounding), a killed evaluation or multirun must write the reference's results. After every
re-run: one row per id in every JSONL, an export marker in every student directory, loadable
checkpoints, and SQLite caches that pass ``PRAGMA integrity_check``.
"""

import random
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from conftest import LOG_TIME, compose_cfg, log_time, log_times
from harness import Outcome, check_left_behind, jsonl, results_core, run, train_cmd
from safetensors.torch import load_file

pytestmark = [pytest.mark.faults, pytest.mark.slow]

STAGES = ("teacher", "distill", "refine", "evaluate")


@dataclass(frozen=True)
class Setup:
    """A trial of one stage: the stages it runs, the line it prints when the stage under test
    starts, and the uninterrupted run's lines around the same stretch (to time it)."""

    stages: str
    opener: str
    reference_from: str
    reference_to: str | None  # None: the end of the run


SETUPS = {
    "distill": Setup("stages=[teacher,distill]", "teacher: kept fraction",
                     "teacher: kept fraction", "distilled student exported"),
    "refine": Setup("stages=[teacher,distill,refine]", "distilled student exists",
                    "distilled student exported", "refined student exported"),
    "evaluate": Setup("stages=[teacher,distill,refine,evaluate]", "refined student exists",
                      "refined student exported", None),
}  # fmt: skip
TEACHER = ["stages=[teacher]", "teacher=llm", "+teacher.chunk_size=2"]  # six written chunks
SWEEP = ["data.limit=2,3", "methods=baselines"]  # two evaluation-only jobs, trained stages reused
TRIALS = {"teacher": 5, "distill": 4, "refine": 4, "evaluate": 4, "multirun": 3}


def stamp(log: str, line: str) -> datetime:
    """When Hydra's log recorded ``line`` first (``[2026-01-01 12:00:00,123][...] - line``)."""
    match = re.search(LOG_TIME + ".*" + re.escape(line), log, re.M)
    assert match, f"no log line {line!r}"
    return log_time(match.group(1))


def start_state(reference: Path, root: Path, keep: tuple[str, ...]) -> None:
    """``root/cache``: the reference cache with only the artifacts of ``keep``, no LM caches."""
    shutil.copytree(reference / "cache", root / "cache")
    for stage in set(STAGES) - set(keep):
        shutil.rmtree(root / "cache" / stage, ignore_errors=True)
    for db in (root / "cache").rglob("*.sqlite"):
        db.unlink()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One uninterrupted run of every stage, and how long it spent in each stage under test."""
    root = tmp_path_factory.mktemp("reference")
    resolve_tokenizer(root)  # a fresh clone converts it once: not inside a timed stage
    done = run(train_cmd(root), root / "log.txt")
    assert done.returncode == 0, done.log[-3000:]
    windows = {}
    for name, setup in SETUPS.items():
        to = (
            log_times(done.log)[-1]
            if setup.reference_to is None
            else stamp(done.log, setup.reference_to)
        )
        windows[name] = (to - stamp(done.log, setup.reference_from)).total_seconds()
    return root, windows


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two exports' weights (their tensors must match).

    Not a fingerprint comparison: a refine resumed from its last step checkpoint ends within
    float rounding (~1e-9) of the uninterrupted run, not bit for bit (docs/reliability.md).
    """
    x, y = (load_file(p / "model.safetensors") for p in (a, b))
    assert x.keys() == y.keys()
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


def resolve_tokenizer(root: Path) -> None:
    cfg = compose_cfg(root, "debug=smoke", "student=tiny_llama", config_name="train")
    assert Path(cfg.student.tokenizer).is_dir()


@pytest.fixture(scope="module")
def teacher_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher-reference")
    done = run(train_cmd(root, *TEACHER), root / "log.txt", trigger="questions to do")
    assert done.returncode == 0, done.log[-3000:]
    return root, done.total_s - done.trigger_s


@pytest.fixture(scope="module")
def sweep_reference(pipeline, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-reference")
    start_state(pipeline[0], root, keep=STAGES)
    done = run(train_cmd(root, *SWEEP, multirun=True), root / "log.txt", trigger="Launching")
    assert done.returncode == 0, done.log[-3000:]
    return root, done.total_s - done.trigger_s


def kill_and_rerun(cmd: list[str], root: Path, trigger: str, window: float, seed: str) -> Outcome:
    """Kill ``cmd`` at a seeded point after ``trigger``, run it again to the end; report."""
    delay = random.Random(seed).uniform(0, window)
    killed = run(cmd, root / "killed.txt", trigger=trigger, kill_after=delay)
    assert killed.trigger_s is not None, f"never reached {trigger!r}: {killed.log[-2000:]}"
    again = run(cmd, root / "rerun.txt")
    assert again.returncode == 0, again.log[-3000:]
    when = "killed" if killed.returncode is None else "ended before the kill"
    print(f"{seed}: {when} {delay:.2f} s after {trigger!r}; re-run finished")
    return killed


@pytest.mark.parametrize("trial", range(TRIALS["teacher"]))
def test_kill_during_teacher(teacher_reference, tmp_path, trial):
    reference, window = teacher_reference
    kill_and_rerun(train_cmd(tmp_path, *TEACHER), tmp_path, "questions to do", window,
                   f"teacher:{trial}")  # fmt: skip
    [ref] = reference.glob("cache/teacher/*/rationales.jsonl")
    [got] = tmp_path.glob("cache/teacher/*/rationales.jsonl")
    key = lambda r: (r["id"], r["sample"])  # noqa: E731
    assert sorted(jsonl(got), key=key) == sorted(jsonl(ref), key=key)
    check_left_behind(tmp_path)


@pytest.mark.parametrize("stage,trial", [(s, t) for s in SETUPS for t in range(TRIALS[s])])
def test_kill_during_stage(pipeline, tmp_path, stage, trial):
    """A killed distill or refine re-exports the reference's student (up to float rounding),
    a killed evaluation writes exactly the reference's results."""
    reference, windows = pipeline
    setup = SETUPS[stage]
    start_state(reference, tmp_path, keep=STAGES[: STAGES.index(stage)])
    kill_and_rerun(train_cmd(tmp_path, setup.stages), tmp_path, setup.opener, windows[stage],
                   f"{stage}:{trial}")  # fmt: skip
    if stage == "evaluate":
        assert results_core(tmp_path / "run") == results_core(reference / "run")
    else:
        [ref] = reference.glob(f"cache/{stage}/*/student")
        [got] = tmp_path.glob(f"cache/{stage}/*/student")
        assert got.relative_to(tmp_path) == ref.relative_to(reference)  # same artifact key
        diff = max_weight_diff(got, ref)
        print(f"{stage}:{trial}: exported weights " + ("bit-identical" if diff == 0 else
              f"differ from the reference by at most {diff:.1e} (float rounding)"))  # fmt: skip
        assert diff <= 1e-6
    check_left_behind(tmp_path)


@pytest.mark.parametrize("trial", range(TRIALS["multirun"]))
def test_kill_during_multirun(pipeline, sweep_reference, tmp_path, trial):
    reference, window = sweep_reference
    start_state(pipeline[0], tmp_path, keep=STAGES)
    kill_and_rerun(train_cmd(tmp_path, *SWEEP, multirun=True), tmp_path, "Launching", window,
                   f"multirun:{trial}")  # fmt: skip
    for job in ("0", "1"):
        assert results_core(tmp_path / "sweep" / job) == results_core(reference / "sweep" / job)
    check_left_behind(tmp_path)
