"""A logger that raises inside Lightning's Trainer never stops distillation."""

import logging

from pytorch_lightning.loggers import Logger

from lmcot import loggers
from lmcot.distill import run_distill
from lmcot.teacher import run_teacher


class RaisingLogger(Logger):
    """A logger whose every write fails, as a W&B logger does when its service is gone."""

    def __init__(self):
        super().__init__()
        self.calls = []

    @property
    def name(self):
        return "raising"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append("log_metrics")
        raise RuntimeError("wandb: network is unreachable")

    def log_hyperparams(self, params, *args, **kwargs):
        self.calls.append("log_hyperparams")
        raise RuntimeError("wandb: network is unreachable")


def test_guarded_logger_logs_and_skips_exceptions(caplog):
    raising = RaisingLogger()
    (guarded,) = loggers.guarded([raising])
    with caplog.at_level(logging.WARNING, logger="lmcot.loggers"):
        guarded.log_metrics({"train/loss": 1.0}, step=3)
        guarded.log_hyperparams({"lr": 0.1})
    assert raising.calls == ["log_metrics", "log_hyperparams"]
    assert caplog.text.count("network is unreachable") == 2
    assert (guarded.name, guarded.version) == ("raising", 0)


def test_distillation_finishes_when_its_logger_raises(cfg_factory, monkeypatch):
    raising = RaisingLogger()
    monkeypatch.setattr(loggers, "instantiate_loggers", lambda cfg, **_: [raising])
    cfg = cfg_factory(
        "debug=smoke", "student=tiny_llama", "data.num_train=8", "distill.val_em_limit=0",
        "prompts.rationale.max_prompt_tokens=150",  # synthetic prompts: ~200 tokens in full
        config_name="train",
    )  # fmt: skip
    run_teacher(cfg)
    metrics = run_distill(cfg)
    assert "distill/val_loss" in metrics
    assert raising.calls.count("log_metrics") >= 1  # the Trainer did call it, inside fit
    assert metrics["distill/sources_cut"] > 0 and metrics["distill/rows_skipped"] == 0
