"""Rationale quality: the aspect scorers, the task reward, and the registry that combines them.

Every scorer has TRL's reward shape ``fn(prompts, completions, **columns) -> list[float | None]``
(see :mod:`lmcot.rewards.base` for the columns). Build the configured set with
``instantiate(cfg.reward, lm=reader)`` (:func:`build_registry`); pick the best of k rationales
with :func:`select_best`. docs/rewards.md describes every scorer and its validation.
"""

from lmcot.rewards.base import ASPECTS, BACKENDS, SCORERS, backends_for, make_scorer, register
from lmcot.rewards.registry import (
    AGGREGATIONS,
    RewardRegistry,
    RewardScores,
    aggregate,
    build_registry,
    build_scorer,
    select_best,
)

__all__ = [
    "AGGREGATIONS", "ASPECTS", "BACKENDS", "SCORERS", "RewardRegistry", "RewardScores",
    "aggregate", "backends_for", "build_registry", "build_scorer", "make_scorer", "register",
    "select_best",
]  # fmt: skip
