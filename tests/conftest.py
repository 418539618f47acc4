"""Compose configs the way the CLI does; keep every test offline and out of the user's cache."""

import logging
import os
import re
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# converted offline models go to a git-ignored folder of this clone, set before any config
# resolves ${paths.model_dir}: never the user's ~/.cache, and converted once per clone
TEST_MODEL_DIR = REPO / ".cache" / "test-models"
os.environ["LMCOT_MODELS"] = str(TEST_MODEL_DIR)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hydra import compose, initialize  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402

import lmcot  # noqa: E402,F401  (registers the config resolvers)

FIXTURES = REPO / "tests" / "fixtures"  # real rows, vendored: see its README.md
HOTPOT_SAMPLE = FIXTURES / "hotpotqa" / "hotpot_dev_distractor_sample.json"
TWOWIKI_SAMPLE = FIXTURES / "2wikimultihopqa" / "dev_sample.json"


LOG_TIME = r"^\[([\d-]+ [\d:]+,\d+)\]"  # Hydra's log line: [2026-01-01 12:00:00,123][...] - ...


def log_time(stamp: str) -> datetime:
    """The time of a log line's stamp (the first group of :data:`LOG_TIME`)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")


def log_times(log: str) -> list[datetime]:
    """The time of every line of a Hydra log, in order."""
    return [log_time(m) for m in re.findall(LOG_TIME, log, re.M)]


class Lines(logging.Handler):
    """Keeps the messages of the log records it is given (attach it to a logger to read them)."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def compose_cfg(tmp_path: Path, *overrides: str, config_name: str = "eval"):
    """The config ``python <entry>.py <overrides>`` would run, writing only under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose(
            config_name,
            return_hydra_config=True,
            overrides=[
                f"hydra.run.dir={tmp_path / 'run'}",
                f"paths.output_dir={tmp_path / 'run'}",  # set by Hydra only when it runs a job
                f"paths.cache_dir={tmp_path / 'cache'}",
                *overrides,
            ],
        )
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory("debug=smoke", "data.limit=2")`` composes under this test's tmp dir."""
    return lambda *overrides, **kw: compose_cfg(tmp_path, *overrides, **kw)
