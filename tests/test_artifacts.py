"""Artifact identity: a stage's key is exactly what determines its output."""

import inspect
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from lmcot.artifacts import DONE, artifact
from lmcot.lm.fingerprint import model_fingerprint
from lmcot.lm.hf import CausalLM

TINY = ["debug=smoke", "student=tiny_llama", "data.num_train=12", "distill.val_em_limit=2"]


def keys(cfg) -> tuple[str, str]:
    return artifact(cfg, "teacher").key, artifact(cfg, "distill").key


def test_evaluation_only_fields_and_runtime_knobs_keep_the_keys(cfg_factory):
    base = keys(cfg_factory(*TINY, config_name="train"))
    for same in ["data.num_examples=300", "data.limit=2", "trainer=cpu",
                 "trainer.enable_progress_bar=true", "trainer.log_every_n_steps=1",
                 "distill.val_em_limit=0", "decoding=[greedy]", "reader.batch_size=2",
                 "student.batch_size=3", "logger=csv"]:  # fmt: skip
        assert keys(cfg_factory(*TINY, same, config_name="train")) == base, same


def test_what_changes_the_output_changes_the_key(cfg_factory):
    teacher, distill = keys(cfg_factory(*TINY, config_name="train"))
    assert keys(cfg_factory(*TINY, "data.num_train=13", config_name="train"))[0] != teacher
    assert keys(cfg_factory(*TINY, "teacher.conclusion=null", config_name="train"))[0] != teacher
    for change in ["distill.optimizer.lr=1e-3", "trainer.max_epochs=2", "seed=1",
                   "student.model_config.hidden_size=48",
                   # the prompt's text, not only its version
                   "prompts.rationale.instruction='Explain.'"]:  # fmt: skip
        assert keys(cfg_factory(*TINY, change, config_name="train"))[1] != distill, change


def test_a_pinned_distill_seed_keeps_one_kd_student_across_rl_seeds(cfg_factory):
    def both(*overrides):
        cfg = cfg_factory(*TINY, *overrides, config_name="train")
        return artifact(cfg, "distill").key, artifact(cfg, "refine").key

    pinned = ["data.seed=0", "distill.seed=0"]  # as experiment=refine_dev pins them
    kd, rl = both(*pinned)
    assert both() == (kd, rl)  # distill.seed follows seed by default: seed 0's keys unchanged
    kd1, rl1 = both(*pinned, "seed=1")
    assert kd1 == kd and rl1 != rl
    assert both("data.seed=0", "distill.seed=1", "seed=1")[0] != kd


def test_keys_hold_no_path_and_convert_no_model(tmp_path, cfg_factory):
    default = cfg_factory(f"paths.model_dir={tmp_path / 'models'}", config_name="train")
    art = artifact(default, "distill")
    assert not (tmp_path / "models").exists()  # the GGUF is named by content, not converted
    assert str(tmp_path) not in json.dumps(art.inputs) and os.environ["HOME"] not in json.dumps(
        art.inputs
    )
    moved = cfg_factory(f"paths.model_dir={tmp_path / 'elsewhere'}", "paths.cache_dir=/x",
                        config_name="train")  # fmt: skip
    assert artifact(moved, "distill").key == art.key


def test_model_fingerprint_follows_content_not_path(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    moved = model_fingerprint(str(tmp_path / "b"))
    LlamaForCausalLM(config).save_pretrained(tmp_path / "c" / "b")  # same name, new weights
    assert model_fingerprint(str(tmp_path / "c" / "b")) != moved
    (tmp_path / "b").rename(tmp_path / "d")  # moved again: same content, same identity
    assert model_fingerprint(str(tmp_path / "d")).split(":")[1] == moved.split(":")[1]
    # the response cache names the student by that fingerprint: a re-export gets a new one
    assert moved.split(":")[1] in CausalLM(str(tmp_path / "d")).cache_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import compose_cfg

    from train import train

    cfg = compose_cfg(tmp_path_factory.mktemp("art"), *TINY, "decoding=[greedy]",
                      "stages=[teacher,distill]", config_name="train")  # fmt: skip
    train(cfg)
    return cfg


def test_manifest_says_what_made_the_artifact(trained):
    art = artifact(trained, "distill")
    manifest = json.loads((art.dir / "manifest.json").read_text())
    assert manifest["key"] == art.key and manifest["stage"] == "distill"
    assert manifest["inputs"]["teacher"] == artifact(trained, "teacher").key
    assert "distill/val_loss" in manifest["metrics"] and manifest["student_fingerprint"]
    teacher = json.loads((artifact(trained, "teacher").dir / "manifest.json").read_text())
    assert teacher["inputs"]["train"]["n"] == 12


def test_evaluation_finds_the_student_on_another_device(trained, tmp_path):
    from conftest import compose_cfg

    from train import train

    cache = f"paths.cache_dir={trained.paths.cache_dir}"
    cfg = compose_cfg(tmp_path, *TINY, "decoding=[greedy]", "stages=[evaluate]", "trainer=cpu",
                      "~methods.lm_guided_rl", cache, config_name="train")  # fmt: skip
    assert "test/lm_guided_kd/em" in train(cfg)


def test_evaluate_py_evaluates_a_given_student(trained, tmp_path):
    from conftest import compose_cfg

    from lmcot.evaluate import evaluate

    student = artifact(trained, "distill").student
    cfg = compose_cfg(tmp_path, "debug=smoke", "student=tiny_llama", "methods=guided",
                      f"student_path={student}", "decoding=[greedy]")  # fmt: skip
    assert "test/lm_guided/em" in evaluate(cfg)
    missing = compose_cfg(tmp_path, "debug=smoke", "methods=guided", "decoding=[greedy]")
    with pytest.raises(ValueError, match="student_path"):
        evaluate(missing)


def test_a_missing_student_error_lists_the_finished_ones(trained, tmp_path):
    from conftest import compose_cfg

    from train import train

    cfg = compose_cfg(tmp_path, *TINY, "decoding=[greedy]", "stages=[evaluate]",
                      "trainer.max_epochs=3", f"paths.cache_dir={trained.paths.cache_dir}",
                      config_name="train")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="student_path=DIR") as err:
        train(cfg)
    assert str(artifact(trained, "distill").student) in str(err.value)


def test_distillation_refuses_an_unfinished_teacher_file(trained, tmp_path):
    from conftest import compose_cfg

    from train import train

    cfg = compose_cfg(tmp_path, *TINY, "stages=[teacher]", config_name="train")
    train(cfg)
    path = artifact(cfg, "teacher").dir / "rationales.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]))  # as a killed teacher leaves it
    cfg = compose_cfg(tmp_path, *TINY, "stages=[distill]", config_name="train")
    with pytest.raises(RuntimeError, match="lacks 7 of 12 training questions"):
        train(cfg)
    assert not artifact(cfg, "distill").done


@pytest.mark.slow
def test_parallel_jobs_with_one_key_train_once(tmp_path):
    """Two processes start the same distillation at once: one trains, the other reuses."""
    args = [
        sys.executable,
        "train.py",
        *TINY,
        "stages=[teacher,distill]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra.job_logging.root.level=INFO",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    jobs = [
        subprocess.Popen([*args, f"hydra.run.dir={tmp_path / str(i)}"], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]  # fmt: skip
    logs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], logs
    assert sum("distilled student exported" in log for log in logs) == 1, logs
    assert sum("distilled student exists, reusing" in log for log in logs) == 1, logs
    (done,) = (tmp_path / "cache" / "distill").glob(f"*/student/{DONE}")
    assert done.exists()


def test_refine_key_holds_no_path_and_follows_the_reward(cfg_factory, tmp_path):
    base = cfg_factory(*TINY, config_name="train")
    key = artifact(base, "refine").key
    assert str(tmp_path) not in json.dumps(artifact(base, "refine").inputs)
    moved = cfg_factory(*TINY, f"paths.cache_dir={tmp_path / 'other'}", config_name="train")
    assert artifact(moved, "refine").key == key
    for change in ["reward.aspects=[task]", "refine=grpo", "refine.optimizer.lr=1e-3"]:
        assert artifact(cfg_factory(*TINY, change, config_name="train"), "refine").key != key
    # the RL student depends on its KD student: a new KD key is a new RL key
    assert artifact(cfg_factory(*TINY, "distill.optimizer.lr=1e-3", config_name="train"),
                    "refine").key != key  # fmt: skip


def test_generation_settings_key_only_the_stages_that_generate(cfg_factory):
    """The evaluation rationale length (and every decoding length interpolated from it) and how
    often refine logs samples retrain nothing; the stop strings that end RL rollouts retrain
    the RL student, never the KD one."""
    base = cfg_factory(*TINY, config_name="train")
    distill, refine = artifact(base, "distill").key, artifact(base, "refine").key
    for same in ["prompts.rationale.generation.max_new_tokens=99", "refine.log_table_every=0",
                 "prompts.answer_task.generation.max_new_tokens=3",
                 "distill.activation_checkpointing=false",  # memory: the same gradients
                 "refine.activation_checkpointing=false"]:  # fmt: skip
        cfg = cfg_factory(*TINY, same, config_name="train")
        assert (artifact(cfg, "distill").key, artifact(cfg, "refine").key) == (distill, refine)
    stop = cfg_factory(*TINY, "prompts.rationale.generation.stop=[.]", config_name="train")
    assert artifact(stop, "distill").key == distill and artifact(stop, "refine").key != refine


def test_a_code_default_is_part_of_the_refine_key(cfg_factory, monkeypatch):
    """A scorer's or an algorithm's default that lives only in the code keys the RL student:
    once a changed coherence default reused an RL student trained on the old reward."""
    import lmcot.algorithms
    from lmcot.rewards.base import SCORERS, scorer_class

    def key(*overrides):
        return artifact(cfg_factory(*TINY, "refine=rloo", *overrides, config_name="train"),
                        "refine").key  # fmt: skip

    base = key()
    coherence = scorer_class("embedding", "coherence")
    default = inspect.signature(coherence).parameters["answer_weight"].default
    # writing a default into conf/ changes nothing: the key already held it
    assert key(f"++reward.scorers.coherence.answer_weight={default}") == base

    class Coherence(coherence):
        def __init__(self, *args, answer_weight=default + 0.1, **kwargs):
            super().__init__(*args, answer_weight=answer_weight, **kwargs)

    monkeypatch.setitem(SCORERS, ("coherence", "embedding"), Coherence)
    assert key() != base
    monkeypatch.undo()

    class RLOO(lmcot.algorithms.RLOO):  # a new option, its default in the code alone
        def __init__(self, *args, baseline_weight=1.0, **kwargs):
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lmcot.algorithms, "RLOO", RLOO)
    assert key() != base
