"""Evaluation stage: every configured method answers the same examples; score and report.

Methods come from the ``methods`` config group, each a ``_target_`` node called as
``method(name, examples, reader)``. All large-LM calls go through the reader's cache, so
re-running an evaluation costs no model calls.
"""

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lmcot import loggers, results
from lmcot.lm.base import LM

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the methods of ``cfg.methods`` on ``cfg.data``; write and log the results."""
    examples = instantiate(cfg.data)
    if not examples:
        raise ValueError(f"data config {cfg.data._target_} produced no examples")
    reader: LM = instantiate(cfg.reader)
    predictions = []
    for name, node in cfg.methods.items():
        log.info("method %s on %d examples", name, len(examples))
        predictions += instantiate(node)(name, examples, reader)
    summary = {
        "n": len(examples),
        "data": cfg.data._target_.rsplit(".", 2)[-2],
        "reader": reader.cache_id,
        "prompt_version": cfg.prompts.version,
        "reader_calls": reader.backend_calls,
        "methods": results.summarize(predictions),
        "notes": OmegaConf.to_container(cfg.notes),
    }
    path = results.write(cfg.paths.output_dir, summary, predictions)
    log.info("wrote %s", path)
    results.print_table(summary)
    metrics = {
        f"test/{name}/{metric}": m[metric]
        for name, m in summary["methods"].items()
        for metric in ("em", "f1")
    }
    run_loggers = loggers.instantiate_loggers(cfg.get("logger"))
    loggers.log_safely(run_loggers, "log_hyperparams", loggers.hparams(cfg))
    loggers.log_safely(run_loggers, "log_metrics", metrics)
    loggers.log_safely(
        run_loggers,
        "log_table",
        key="predictions",
        columns=["id", "method", "rationale", "prediction", "gold", "em", "f1"],
        data=[
            [p.id, p.method, p.rationale, p.prediction, p.gold, p.em, p.f1] for p in predictions
        ],
    )
    loggers.finish(run_loggers)
    return metrics
