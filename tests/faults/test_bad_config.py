"""Bad config values fail at start, naming the key, before any data is read or model loaded."""

import copy
import re
import subprocess
import time

import pytest
from conftest import compose_cfg
from harness import env, train_cmd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import lmcot
import lmcot.lm.hf
from evaluate import checked_evaluate
from lmcot import preflight
from lmcot.preflight import ConfigError
from train import STAGES, train

pytestmark = pytest.mark.faults
TINY = ["debug=smoke", "student=tiny_llama"]


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(lmcot.lm.hf.HFModel, "__init__", refuse)
    monkeypatch.setattr("lmcot.data.synthetic.load", refuse)


CASES = [
    (["stages=[teacher,refin]"], r"stages: unknown stages \['refin'\]"),
    (["reward.aspects=[factuality,fluenzy]"], r"reward.aspects: unknown aspects \['fluenzy'\]"),
    (["+reward.weights.clarity=2.0"], r"reward.weights: unknown aspects \['clarity'\]"),
    (["quality.aspects=[]"], r"quality.aspects is empty"),
    (["decoding.sc.num_samples=0"], r"decoding.sc.num_samples must be an integer >= 1, got 0"),
    (["reward.aggregation=geometric"], r"reward.aggregation must be one of"),
    (["reward.aggregation=product", "reward.weights.fluency=-1.0"],
     r"reward.weights.fluency=-1.0: reward.aggregation=product .* needs weights >= 0"),
    (["refine.batch_size=0"], r"refine.batch_size must be an integer >= 1, got 0"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", CASES)
def test_train_refuses_at_start(tmp_path, overrides, message):
    cfg = compose_cfg(tmp_path, *TINY, *overrides, config_name="train")
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_evaluate_refuses_at_start(tmp_path):
    cfg = compose_cfg(tmp_path, *TINY, "decoding.sc.num_samples=-2")
    with pytest.raises(ConfigError, match="decoding.sc.num_samples"):
        checked_evaluate(cfg)


def test_negative_weights_are_fine_when_summed(tmp_path):
    from lmcot.preflight import check_reward

    cfg = compose_cfg(tmp_path, *TINY, "reward.weights.fluency=-1.0", config_name="train")
    check_reward(cfg.reward, "reward")  # a penalty is a legitimate weighted_sum term


COUNT, SAMPLED = "an integer >= 1", "a number > 0 (these samples are drawn)"
# (overrides, the bad key's expected value): every size, count and sampling setting of every
# stage that would otherwise fail late (after the teacher and distillation, or in evaluation)
SIZES = [
    ("refine.batch_size=0", COUNT), ("refine.batch_size=true", COUNT),
    ("refine.steps_per_epoch=0", COUNT), ("refine.epochs=0", COUNT),
    ("refine.val_size=0", COUNT), ("refine.max_new_tokens=0", COUNT),
    ("refine.temperature=0.0", SAMPLED), ("refine.kl_limit=0", "a number > 0"),
    ("refine.max_grad_norm=-1.0", "null or a number > 0"),
    ("refine.log_table_every=-1", "an integer >= 0"), ("refine.optimizer.lr=0", "a number > 0"),
    ("refine.algorithm.epochs=0", COUNT), ("refine.algorithm.minibatch_size=0", COUNT),
    ("refine.algorithm.clip=0.0", "a number > 0"),
    ("refine.algorithm.kl.coef=-1.0", "a number >= 0"),
    ("distill.batch_size=0", COUNT), ("distill.max_target_length=0", COUNT),
    ("distill.val_fraction=0.0", "a number in (0, 1)"),
    ("distill.val_fraction=1.0", "a number in (0, 1)"),
    ("distill.val_em_limit=-1", "an integer >= 0"), ("distill.optimizer.lr=-1e-4", "a number > 0"),
    ("decoding.greedy.max_new_tokens=0", COUNT), ("decoding.sc.max_new_tokens=-1", COUNT),
    ("decoding.sc.temperature=0.0", SAMPLED), ("decoding.sc.top_p=0.0", "a number in (0, 1]"),
    ("decoding.sc.top_p=1.5", "a number in (0, 1]"), ("decoding.sc.round_size=0", COUNT),
    ("decoding.sc.confidence=0.5", "null or a number in (0.5, 1]"),
    ("prompts.guided.generation.max_new_tokens=0", COUNT),
    ("prompts.rationale.generation.max_new_tokens=0", COUNT),
    ("+prompts.cot.generation.temperature=-1.0", "a number >= 0"),
    ("+prompts.standard.generation.top_p=2.0", "a number in (0, 1]"),
    ("prompts.rationale.max_prompt_tokens=0", "null or an integer >= 1"),
    ("reader.batch_size=0", COUNT), ("+reader.write_every=0", COUNT),
    ("student.batch_size=0", COUNT), ("+student.write_every=0", COUNT),
    ("reward.scorers.factuality.batch_size=0", COUNT), ("quality.normalize_window=0", COUNT),
    ("data.limit=0", "null or an integer >= 1"), ("data.limit=-3", "null or an integer >= 1"),
    ("data.num_examples=0", COUNT), ("data.num_train=0", COUNT),
]  # fmt: skip
# the same for PPO's own keys (its critic, GAE, the adaptive KL controller): refine=ppo
PPO_SIZES = [
    ("refine.algorithm.value_clip=-0.2", "null or a number > 0"),
    ("refine.algorithm.value_lr=0", "null or a number > 0"),
    ("refine.algorithm.critic_warmup_steps=-1", "an integer >= 0"),
    ("refine.algorithm.vf_coef=-0.1", "a number >= 0"),
    ("refine.algorithm.gamma=1.5", "a number in [0, 1]"),
    ("refine.algorithm.lam=-0.1", "a number in [0, 1]"),
    ("refine.algorithm.kl.target=0", "a number > 0"),
    ("refine.algorithm.kl.horizon=0", COUNT),
]  # fmt: skip
# the same, where another config group must be chosen first (composed one by one: slower)
GROUP_SIZES = [
    ("refine=grpo", "refine.algorithm.group_size=1",
     "an integer >= 2 (GRPO's advantages compare the samples of one question)"),
    ("decoding=[greedy,sc,top_quality]", "decoding.top_quality.temperature=0.0", SAMPLED),
    ("decoding=[greedy,sc,top_quality]", "decoding.top_quality.num_samples=0", COUNT),
    ("data=hotpotqa", "data.train_limit=0", "null or an integer >= 1"),
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The smoke config, composed once: each case applies its override to a copy."""
    return compose_cfg(tmp_path_factory.mktemp("cfg"), *TINY, config_name="train")


@pytest.fixture(scope="module")
def tiny_ppo(tmp_path_factory):
    """The smoke config with PPO (the default algorithm is RLOO), composed once."""
    return compose_cfg(tmp_path_factory.mktemp("cfg"), *TINY, "refine=ppo", config_name="train")


def overridden(cfg, override: str):
    """A copy of ``cfg`` with one command-line override applied as Hydra applies it."""
    [o] = OverridesParser.create().parse_overrides([override])
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True, force_add=o.is_add())
    return cfg


def refused(cfg, override: str, expected: str) -> None:
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be {expected}, got ")):
        preflight.check(cfg, STAGES)


@pytest.mark.parametrize("override,expected", SIZES)
def test_sizes_and_counts_are_checked_at_start(tiny, override, expected):
    refused(overridden(tiny, override), override, expected)


@pytest.mark.parametrize("override,expected", PPO_SIZES)
def test_ppo_sizes_are_checked_at_start(tiny_ppo, override, expected):
    refused(overridden(tiny_ppo, override), override, expected)


def test_an_unclipped_critic_and_its_own_lr_pass_at_start(tiny_ppo):
    """value_clip null (plain MSE) and a critic learning rate are settings, not errors."""
    cfg = overridden(tiny_ppo, "refine.algorithm.value_clip=null")
    preflight.check(overridden(cfg, "refine.algorithm.value_lr=1e-3"), STAGES)


@pytest.mark.parametrize("group,override,expected", GROUP_SIZES)
def test_sizes_of_other_groups_are_checked_at_start(tmp_path, group, override, expected):
    refused(compose_cfg(tmp_path, *TINY, group, override, config_name="train"), override, expected)


def test_validation_must_leave_training_questions(tmp_path):
    cfg = compose_cfg(tmp_path, *TINY, "data.num_train=2", config_name="train")
    with pytest.raises(ConfigError, match=r"refine.val_size must be below data.num_train=2, got"):
        preflight.check(cfg, STAGES)
    preflight.check(compose_cfg(tmp_path, *TINY, "data.num_train=3", config_name="train"), STAGES)
    no_refine = ["data.num_train=2", "stages=[teacher,distill]"]  # the hold-out is refine's
    preflight.check(compose_cfg(tmp_path, *TINY, *no_refine, config_name="train"), STAGES)


def test_shipped_settings_pass_without_resolving_a_model_path(tmp_path):
    def refuse(*args):
        raise AssertionError(f"a model path was resolved (that converts the model): {args}")

    OmegaConf.register_new_resolver("gguf_model", refuse, replace=True)
    try:
        for overrides in ([], ["refine=ppo"], ["refine=grpo", "decoding=[greedy,sc,top_quality]"],
                          ["data=hotpotqa", "reader=openai"]):  # fmt: skip
            preflight.check(compose_cfg(tmp_path, *overrides, config_name="train"), STAGES)
    finally:
        OmegaConf.register_new_resolver("gguf_model", lmcot._gguf_model, replace=True)


@pytest.mark.slow
def test_a_bad_refine_batch_fails_before_the_teacher_runs(tmp_path):
    """The real command: it used to run teacher and distillation for minutes, then IndexError."""
    start = time.monotonic()
    done = subprocess.run(train_cmd(tmp_path, "refine.batch_size=0"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode == 1
    assert "refine.batch_size must be an integer >= 1, got 0" in done.stderr + done.stdout
    assert not (tmp_path / "cache" / "teacher").exists(), "the teacher stage started"
    print(f"refused in {elapsed:.1f} s")
