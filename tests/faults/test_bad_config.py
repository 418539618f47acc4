"""Bad config values fail at start, naming the key, before any data is read or model loaded."""

import pytest
from conftest import compose_cfg

import lmcot.lm.hf
from evaluate import checked_evaluate
from lmcot.preflight import ConfigError
from train import train

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
