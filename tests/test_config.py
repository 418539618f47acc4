"""Every config option composes, and the CLI strings of the README resolve to what they say."""

from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group", ["data", "reader", "student", "teacher", "trainer", "logger", "experiment"]
)
def test_every_option_of_a_group_composes(cfg_factory, group):
    for option in options(group):
        override = f"{group}={option}" if group != "student" else f"student={option}"
        cfg = cfg_factory(override, config_name="train")
        for node in ("data", "reader", "student", "teacher", "trainer"):
            target = OmegaConf.select(cfg, f"{node}._target_")
            assert target and get_object(target), (group, option, node)


def test_paper_experiment_sets_the_paper_setting(cfg_factory):
    cfg = cfg_factory("experiment=paper_hotpotqa", "reader.base_url=http://gpu:8000/v1",
                      config_name="train")  # fmt: skip
    assert cfg.data._target_ == "lmcot.data.hotpotqa.load"
    assert cfg.student.name_or_path == "google/flan-t5-large"
    assert cfg.reader.model == "google/flan-t5-xxl" and cfg.reader.base_url.startswith(
        "http://gpu"
    )
    assert list(cfg.decoding) == ["greedy", "sc"] and cfg.teacher.num_samples == 4


def test_decoding_is_a_list_of_choices(cfg_factory):
    cfg = cfg_factory(
        "decoding=[sc,top_quality]", "decoding.sc.num_samples=7", config_name="train"
    )
    assert list(cfg.decoding) == ["sc", "top_quality"] and cfg.decoding.sc.num_samples == 7


def test_no_secret_in_any_config():
    for path in CONF.rglob("*.yaml"):
        text = path.read_text().lower()
        assert "sk-" not in text and "api_key:" not in text, path
