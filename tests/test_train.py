"""`python train.py` end to end on tiny models: all the methods, and no work done twice."""

import gc
import json
import logging
import weakref
from pathlib import Path

import pytest
from conftest import Lines, compose_cfg
from hydra.core.hydra_config import HydraConfig

import lmcot.distill
import lmcot.evaluate
import lmcot.export
from lmcot.artifacts import DONE, artifact
from lmcot.lm.hf import HFModel
from lmcot.teacher import teacher_path
from train import train

TINY = ["debug=smoke", "student=tiny_llama", "data.num_train=12", "distill.val_em_limit=2"]
SC2 = "decoding.sc.num_samples=2"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run of the default stages, shared by the tests that inspect or repeat it, with
    the progress lines it logged (stderr is no terminal under pytest; a line per update)."""
    cfg = compose_cfg(tmp_path_factory.mktemp("train"), *TINY, SC2, config_name="train")
    progress, lines = logging.getLogger("lmcot.progress"), Lines()
    level = progress.level
    progress.setLevel(logging.INFO)
    progress.addHandler(lines)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("lmcot.progress.LOG_EVERY_S", 0.0)
            metrics = train(cfg)
    finally:
        progress.removeHandler(lines)
        progress.setLevel(level)
    return cfg, metrics, lines.lines


def test_train_writes_all_methods(trained):
    cfg, metrics, _ = trained
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    assert list(results["methods"]) == ["standard", "cot", "lm_guided_kd", "lm_guided_kd_sc",
                                        "lm_guided_rl", "lm_guided_rl_sc"]  # fmt: skip
    assert all(results["methods"][m]["n"] == 4 for m in results["methods"])
    assert metrics["teacher/kept_fraction"] == 1.0
    assert "distill/val_loss" in metrics and "test/lm_guided_kd_sc/em" in metrics
    rows = [json.loads(line) for line in open(f"{cfg.paths.output_dir}/predictions.jsonl")]
    guided = [r for r in rows if r["method"].startswith("lm_guided")]
    assert len(guided) == 16 and all(isinstance(r["rationale"], str) for r in guided)
    # SC draws k = 2 per question; greedy methods draw no samples; duplicates are counted
    assert results["samples_used"] == {"lm_guided_kd_sc": 2.0, "lm_guided_rl_sc": 2.0}


def test_training_and_model_calls_log_their_progress_off_a_terminal(trained):
    *_, lines = trained
    for stage, unit in (("distill", "batch"), ("refine", "step")):
        ends = [line for line in lines if line.startswith(f"{stage}: ")]
        assert ends and unit in ends[-1] and "<" in ends[-1], lines  # count, elapsed<ETA, rate
        done, total = ends[-1].split()[1].split("/")
        assert done == total and int(total) > 0
    assert any("loss=" in line for line in lines if line.startswith("distill: "))
    assert any(line.startswith("CausalLM generate: ") for line in lines)  # the models' calls


def test_rerun_reuses_teacher_checkpoint_and_caches(trained, monkeypatch):
    cfg, _, _ = trained
    HydraConfig().set_config(cfg)
    teacher_file = teacher_path(cfg)
    before = teacher_file.read_text()
    export = artifact(cfg, "distill").student / "model.safetensors"
    mtime = export.stat().st_mtime_ns

    def no_fit(*args, **kwargs):
        raise AssertionError("the distilled student was trained again")

    def no_loading(self):
        raise AssertionError(f"a fully cached re-run loaded {self.name_or_path}")

    monkeypatch.setattr(lmcot.distill.pl.Trainer, "fit", no_fit)
    monkeypatch.setattr(HFModel, "_load", no_loading)
    metrics = train(cfg)
    assert teacher_file.read_text() == before  # no row written twice
    assert export.stat().st_mtime_ns == mtime
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    assert results["reader_calls"] == 0  # every reader answer came from the cache
    assert "test/lm_guided_kd/em" in metrics


def test_evaluation_holds_one_student_at_a_time(trained, monkeypatch):
    cfg, _, _ = trained
    HydraConfig().set_config(cfg)
    students, build = [], lmcot.evaluate.instantiate

    def tracked(node, *args, **kwargs):
        made = build(node, *args, **kwargs)
        if "name_or_path" in kwargs:  # a student, before its first use loads its weights
            gc.collect()
            assert all(ref() is None for ref in students), "the previous student is alive"
            students.append(weakref.ref(made))
        return made

    monkeypatch.setattr(lmcot.evaluate, "instantiate", tracked)
    lmcot.evaluate.evaluate(cfg)
    assert len(students) == 2  # KD, then RL


def test_rationale_quality_and_top_quality_are_reported(trained, tmp_path_factory):
    cfg, _, _ = trained
    cheap = "quality.aspects=[relevance,readability,task]"
    again = compose_cfg(
        Path(cfg.paths.cache_dir).parent, *TINY, "stages=[evaluate]",
        "decoding=[greedy,top_quality]", "decoding.top_quality.num_samples=2",
        "selection.aspects=[relevance,readability]", cheap, "evaluate.rationale_quality=true",
        config_name="train",
    )  # fmt: skip
    train(again)
    results = json.loads(open(f"{again.paths.output_dir}/results.json").read())
    assert "lm_guided_kd_top_quality" in results["methods"]
    assert set(results["quality"]) == {
        "cot", "lm_guided_kd", "lm_guided_kd_top_quality", "lm_guided_rl",
        "lm_guided_rl_top_quality",
    }  # fmt: skip
    for means in results["quality"].values():
        assert set(means) == {"relevance", "readability", "task", "aggregate"}
        assert 0 <= means["readability"] <= 1
    rows = [json.loads(line) for line in open(f"{again.paths.output_dir}/quality.jsonl")]
    assert len(rows) == 5 * 4 and {r["method"] for r in rows} == set(results["quality"])
    intervals = results["quality_intervals"]
    assert "vs_kd" in intervals["lm_guided_rl"] and "vs_kd" not in intervals["lm_guided_kd"]
    kd = intervals["lm_guided_kd"]
    assert kd["aggregate"] == pytest.approx(results["quality"]["lm_guided_kd"]["aggregate"])


def test_interrupted_distillation_resumes_from_the_last_checkpoint(cfg_factory, monkeypatch):
    cfg = cfg_factory(*TINY, "stages=[teacher,distill]", config_name="train")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after training, before the export")

    monkeypatch.setattr(lmcot.export, "export", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    last = artifact(cfg, "distill").dir / "checkpoints" / "last.ckpt"
    assert last.exists() and not (artifact(cfg, "distill").student).exists()
    monkeypatch.undo()

    steps = []
    monkeypatch.setattr(
        lmcot.distill.DistillModule, "training_step", lambda self, *a: steps.append(1)
    )
    train(cfg)  # resumes at the end of the finished epoch: nothing left to train
    assert steps == []
    assert (artifact(cfg, "distill").student / DONE).exists()


def test_seq2seq_student_trains_and_guides(cfg_factory):
    cfg = cfg_factory(*TINY, "student=tiny_t5", "decoding=greedy", config_name="train")
    train(cfg)
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    assert list(results["methods"]) == ["standard", "cot", "lm_guided_kd", "lm_guided_rl"]


def test_unknown_stage_is_rejected(cfg_factory):
    with pytest.raises(ValueError, match="unknown stages"):
        train(cfg_factory(*TINY, "stages=[teacher,refin]", config_name="train"))


@pytest.mark.slow
def test_validity_experiment_runs_end_to_end_at_smoke_scale(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=synthetic_validity", *TINY, SC2,
                      "quality.aspects=[relevance,readability]", config_name="train")  # fmt: skip
    assert cfg.data.num_examples == 300 and cfg.evaluate.rationale_quality
    train(cfg)
    results = json.loads(open(f"{cfg.paths.output_dir}/results.json").read())
    kd = results["methods"]["lm_guided_kd"]
    assert kd["n"] == 4 and len(kd["em_ci"]) == 2 and "vs_standard" in kd
    assert "vs_kd" in results["methods"]["lm_guided_rl"]
    assert {"lm_guided_kd", "lm_guided_rl"} <= set(results["quality"])
    assert "lm_guided_kd" in results["diagnostics"]
