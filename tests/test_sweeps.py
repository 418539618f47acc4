"""Named sweeps: each composes, expands to the expected jobs, and a multirun survives."""

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import joblib
import pytest
from conftest import REPO, compose_cfg, log_times
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.artifacts import artifact

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # isort: skip

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))
SELECTIONS = {"sweeps=validity_student"}  # grids whose result picks a setting (docs/sweeps.md)


def jobs(cfg, *cli: str) -> list[list[str]]:
    """The override lists a basic sweeper would launch for this config (nothing runs)."""
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    parsed = OverridesParser.create().parse_overrides(
        [*(f"{k}={v}" for k, v in params.items()), *cli]  # the command line wins, as in Hydra
    )
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return batch


def test_every_sweep_is_a_config_of_the_sweeps_group():
    assert {"aspects", "decoding", "model_sizes", "paper", "smoke"} <= set(SWEEPS)
    assert (REPO / "conf" / "sweeps").resolve() == (REPO / "sweeps").resolve()


@pytest.mark.parametrize(
    "name,count,example",
    [
        ("aspects", 11, "reward.aspects=[task]"),
        ("decoding", 3, "decoding.sc.num_samples=10"),
        ("model_sizes", 5, "student=flan_t5_xl"),
        ("paper", 6, "experiment=paper_2wiki"),
        ("smoke", 4, "reward.aspects=[readability,relevance]"),
    ],
)
def test_sweep_composes_and_expands(tmp_path, name, count, example):
    cfg = compose_cfg(tmp_path, f"sweeps={name}", config_name="train")
    assert cfg.sweep == name and "refine" in cfg.stages
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{name}"  # stable: a rerun skips finished jobs
    expanded = jobs(cfg)
    assert len(expanded) == count and any(example in job for job in expanded)
    for job in expanded:  # every job composes
        compose_cfg(tmp_path, f"sweeps={name}", *job, config_name="train")


def test_validity_student_sweep_chooses_on_dev_without_touching_evaluation_questions(tmp_path):
    cfg = compose_cfg(tmp_path, "sweeps=validity_student", config_name="train")
    assert cfg.data.split == "dev" and "refine" not in cfg.stages
    assert set(cfg.methods) == {"standard", "cot", "lm_guided"}
    assert list(cfg.decoding) == ["greedy"]
    expanded = jobs(cfg)
    assert len(expanded) == 4 and ["data.num_train=1600", "trainer.max_epochs=3"] in expanded
    for job in expanded:
        job_cfg = compose_cfg(tmp_path, "sweeps=validity_student", *job, config_name="train")
        assert job_cfg.data.split == "dev"
    # the chosen job's teacher file and student are the ones the experiment then evaluates
    chosen = compose_cfg(tmp_path, "sweeps=validity_student", "data.num_train=1600",
                         "trainer.max_epochs=3", config_name="train")  # fmt: skip
    experiment = compose_cfg(tmp_path, "experiment=synthetic_validity", config_name="train")
    for stage in ("teacher", "distill"):
        assert artifact(chosen, stage).key == artifact(experiment, stage).key


def test_refine_dev_compares_kd_and_rl_on_dev_with_the_dev_chosen_400_x_1_student(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=refine_dev", config_name="train")
    assert cfg.data.split == "dev" and cfg.data.num_examples >= 150
    assert list(cfg.methods) == ["lm_guided_kd", "lm_guided_rl"]
    assert list(cfg.decoding) == ["greedy"]
    assert cfg.evaluate.rationale_quality and cfg.quality.normalize
    assert "task" in cfg.reward.aspects and len(cfg.reward.aspects) == 9
    assert not cfg.optimized_metric.startswith("test/")
    chosen = compose_cfg(tmp_path, "sweeps=validity_student", "data.num_train=400",
                         "trainer.max_epochs=1", config_name="train")  # fmt: skip
    assert artifact(chosen, "teacher").key == artifact(cfg, "teacher").key
    for key in ("data.num_train", "trainer.max_epochs", "distill.batch_size", "distill.optimizer"):
        assert OmegaConf.select(chosen, key) == OmegaConf.select(cfg, key), key
    # the aspect ablation runs over it: every job the same KD student, its own RL reward
    ablation = compose_cfg(tmp_path, "sweeps=aspects", "experiment=refine_dev",
                           "reward.aspects=[fluency]", config_name="train")  # fmt: skip
    assert list(ablation.reward.aspects) == ["fluency"] and ablation.data.split == "dev"
    assert artifact(ablation, "distill").key == artifact(cfg, "distill").key


def test_refine_dev_runs_the_dev_chosen_rl_setting_and_leaves_ppo_its_kl(tmp_path):
    """RLOO without a KL term (so no reference forward) and one update over a step's samples
    (the rollout forward reused): chosen on dev, docs/refine.md 2026-12-07. PPO under
    refine_dev keeps its own KL coefficient: nothing in the experiment zeroes it."""
    cfg = compose_cfg(tmp_path, "experiment=refine_dev", config_name="train")
    algorithm = cfg.refine.algorithm
    assert algorithm._target_ == "lmcot.algorithms.RLOO" and algorithm.kl.coef == 0
    assert algorithm.epochs == 1
    assert algorithm.minibatch_size >= cfg.refine.batch_size * algorithm.group_size
    ppo = compose_cfg(tmp_path, "experiment=refine_dev", "refine=ppo", config_name="train")
    alone = compose_cfg(tmp_path, "refine=ppo", config_name="train")
    assert ppo.refine.algorithm.kl.coef == alone.refine.algorithm.kl.coef > 0


def test_a_sweep_narrows_from_the_command_line(tmp_path):
    cfg = compose_cfg(tmp_path, "sweeps=decoding", config_name="train")
    assert len(jobs(cfg, "decoding.sc.num_samples=3,5")) == 2  # the CLI wins over the file


def test_aspect_sweep_rl_reward_varies_while_quality_stays_whole(tmp_path):
    cfg = compose_cfg(tmp_path, "sweeps=aspects", "reward.aspects=[fluency]", config_name="train")
    assert list(cfg.reward.aspects) == ["fluency"] and "task" in cfg.quality.aspects
    assert cfg.evaluate.rationale_quality


def test_slurm_launcher_composes_to_executor_parameters(tmp_path):
    cfg = compose_cfg(tmp_path, "sweeps=paper", "hydra/launcher=slurm",
                      "hydra.launcher.partition=gpu", config_name="train")  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 1, 3)
    assert launcher.array_parallelism == 8
    built = instantiate(launcher)
    assert built.params["timeout_min"] == 720 and built.params["partition"] == "gpu"


def test_cpu_parallel_launcher_composes_to_two_loky_processes(tmp_path):
    cfg = compose_cfg(tmp_path, "sweeps=aspects", "hydra/launcher=cpu_parallel",
                      config_name="train")  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert (launcher.n_jobs, launcher.prefer, launcher.backend) == (2, "processes", None)


def run_sweep(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "sweeps=smoke",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra.job_logging.root.level=INFO",
        *extra,
    ]
    # from another working directory: the sweep must not depend on the repository root
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip


def smoke_jobs(tmp_path: Path) -> list[Path]:
    """The job directories of :func:`run_sweep`'s multirun, in name order."""
    return sorted(p for p in (tmp_path / "outputs" / "sweeps" / "smoke").iterdir() if p.is_dir())


@pytest.mark.slow
def test_smoke_multirun_shares_stages_skips_finished_jobs_and_lists_failures(tmp_path):
    first = run_sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    job_dirs = smoke_jobs(tmp_path)
    assert len(job_dirs) == 4 and all((p / "results.json").exists() for p in job_dirs)
    assert log.count("teacher: 12 of 12 questions to do") == 1  # one teacher file for 4 jobs
    assert log.count("distilled student exported") == 1  # one KD student for 4 jobs
    results = json.loads((job_dirs[0] / "results.json").read_text())
    assert {"lm_guided_kd", "lm_guided_rl", "lm_guided_rl_sc"} <= set(results["methods"])

    again = run_sweep(tmp_path)
    assert again.returncode == 0
    assert (again.stdout + again.stderr).count("job already finished") == 4

    broken = run_sweep(tmp_path, "reward.aspects=[readability],[no_such_aspect]")
    out = broken.stdout + broken.stderr
    assert broken.returncode != 0 and "2 of 6 jobs failed" in out
    assert "failed" in out and "no_such_aspect" in out
    assert out.count("job already finished") == 2  # [readability] x k=2,3 were done


def job_span(job: Path) -> tuple[datetime, datetime, int]:
    """A job's first and last log time and the torch threads its log says it ran on."""
    log = (job / "train.log").read_text()
    times = log_times(log)
    return times[0], times[-1], int(re.search(r"torch threads: (\d+)", log).group(1))


@pytest.mark.slow
def test_cpu_parallel_multirun_shares_the_cores_and_makes_each_stage_once(tmp_path):
    """Two jobs at a time, each on half the cores, overlapping; the teacher and the KD student,
    which all four jobs share, are still made once (a job waits on the other's lock)."""
    done = run_sweep(tmp_path, "hydra/launcher=cpu_parallel")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    log = done.stdout + done.stderr
    assert log.count("teacher: 12 of 12 questions to do") == 1
    assert log.count("distilled student exported") == 1
    jobs = smoke_jobs(tmp_path)
    assert len(jobs) == 4 and all((p / "results.json").exists() for p in jobs)
    spans = [job_span(p) for p in jobs]
    assert {threads for *_, threads in spans} == {max(1, joblib.cpu_count() // 2)}  # as loky
    overlaps = [a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :]]
    assert any(overlaps), spans  # side by side, not one after the other


def test_optuna_search_composes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[optuna]'")
    cfg = compose_cfg(tmp_path, "hparams_search=refine_optuna", config_name="train")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.storage.startswith("sqlite:///") and "refine.optimizer.lr" in sweeper.params
    assert cfg.optimized_metric == "refine/val_em" and "refine/val_em" in sweeper.study_name
    assert cfg.refine.val_size == 32  # trials ranked on 32 held-out training questions, not 4


@pytest.mark.parametrize("config", [*(f"hparams_search={n}" for n in SEARCHES),
                                    *(f"sweeps={n}" for n in SWEEPS)])  # fmt: skip
def test_no_search_or_selection_reads_the_evaluation_questions(tmp_path, config):
    """A sweeper that optimises a returned metric optimises a held-out training metric and runs
    no evaluation, or evaluates on dev; a grid (the basic sweeper ignores what jobs return)
    that chooses a setting chooses it on dev. The other grids report every job."""
    if config.startswith("hparams_search"):
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg(tmp_path, config, config_name="train")
    on_dev = cfg.data.split == "dev"
    if "direction" in cfg.hydra.sweeper:  # it optimises cfg.optimized_metric
        held_out = cfg.optimized_metric.startswith(("val/", "refine/val_"))
        assert on_dev or (held_out and "evaluate" not in cfg.stages), cfg.optimized_metric
    else:
        assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
        assert on_dev or config not in SELECTIONS, "a selection sweep must read dev questions"


@pytest.mark.slow
def test_optuna_trials_get_the_held_out_metric_and_read_no_evaluation_question(tmp_path):
    """Two smoke trials: Optuna receives a number (train.py returns ``optimized_metric``), and
    no job writes predictions, so no evaluation question was answered."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install -e '.[optuna]'")
    (tmp_path / "cache").mkdir()  # SQLite opens no file in a directory that does not exist
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(REPO / "train.py"), "-m", "hparams_search=refine_optuna",
           "debug=smoke", "student=tiny_llama", "data.num_train=12", "distill.val_em_limit=2",
           "hydra.sweeper.n_trials=2", f"paths.cache_dir={tmp_path / 'cache'}",
           f"hydra.sweep.dir={tmp_path / 'search'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    best = OmegaConf.load(tmp_path / "search" / "optimization_results.yaml")
    assert isinstance(best.best_value, float) and 0.0 <= best.best_value <= 1.0
    assert not list((tmp_path / "search").rglob("predictions.jsonl"))
