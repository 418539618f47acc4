"""What the entry points check before any data is read or model loaded: config values that would
otherwise fail (or silently mislead) hours into a run, and that the output and cache
directories can be written.

Each error names the config key and what was expected. Checks that a component already makes
when it is built cheaply (data options, teacher settings) stay there; here are only those
whose component is built late, after models have loaded: the reward registries (refine,
``top_quality``, ``rationale_quality``), the decodings (evaluate, the last stage) and the
distillation's micro-batches (after a teacher stage that may take hours).

Student and reader tokenizers need not agree: each model fits its own prompts with its own
tokenizer (:func:`lmcot.prompts.token_counter`) and the two exchange only text, so nothing is
checked about them.
"""

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig

from lmcot.distill import micro_batches
from lmcot.rewards.base import ASPECTS
from lmcot.rewards.registry import AGGREGATIONS

REWARD_NODES = ("reward", "quality", "selection")  # every reward registry a run may build


class ConfigError(ValueError):
    """A config value no run can use; the message names the key."""


def check(cfg: DictConfig, stages: Iterable[str] = ()) -> None:
    """Raise :class:`ConfigError` naming the first bad key, or ``OSError`` for a directory that
    cannot be written. ``stages``: the stage names the entry point knows (train.py)."""
    if "stages" in cfg:
        unknown = [s for s in cfg.stages if s not in stages]
        if unknown:
            raise ConfigError(f"stages: unknown stages {unknown}; known: {list(stages)}")
    for node in REWARD_NODES:
        if node in cfg:
            check_reward(cfg[node], node)
    for name, decoding in (cfg.get("decoding") or {}).items():
        k = decoding.get("num_samples", 1)
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"decoding.{name}.num_samples must be an integer >= 1, got {k!r}")
    if "distill" in cfg:
        micro_batches(cfg.distill.batch_size, cfg.distill.get("micro_batch_size"))
    for key in ("output_dir", "cache_dir"):
        check_writable(cfg.paths[key], f"paths.{key}")


def check_reward(reward: DictConfig, node: str) -> None:
    """Aspects known and scored, weights of known aspects, and an aggregation that can use
    them: ``product`` raises scores to their weights, so a negative weight turns a low score
    into a huge reward and a zero score into a division by zero."""
    aspects = list(reward.get("aspects") or [])
    if not aspects:
        raise ConfigError(f"{node}.aspects is empty: enable at least one of {', '.join(ASPECTS)}")
    weights = reward.get("weights") or {}
    for key, names in (("aspects", aspects), ("weights", list(weights))):
        unknown = [a for a in names if a not in ASPECTS]
        if unknown:
            raise ConfigError(
                f"{node}.{key}: unknown aspects {unknown}; aspects: {', '.join(ASPECTS)}"
            )
    missing = [a for a in aspects if a not in (reward.get("scorers") or {})]
    if missing:
        raise ConfigError(f"{node}.scorers has no scorer for {missing}")
    aggregation = reward.get("aggregation", "weighted_sum")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"{node}.aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if aggregation == "product":
        negative = {a: weights[a] for a in aspects if a in weights and weights[a] < 0}
        if negative:
            a, w = next(iter(negative.items()))
            raise ConfigError(
                f"{node}.weights.{a}={w}: {node}.aggregation=product raises scores to their "
                "weights and needs weights >= 0; use weighted_sum or mean for negative weights"
            )


def check_writable(path: str | Path, key: str) -> None:
    """Create ``path`` if needed and write, sync and delete a small probe file there, so a
    read-only or full disk is reported now, naming the directory, not after hours of work."""
    path = Path(path)
    probe = path / f".lmcot-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)  # one block: a full disk fails here, an empty file may not
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else e.strerror or str(e)
        raise OSError(e.errno, f"{key}={path} cannot be written ({why}): {e}") from e
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass  # the directory itself is unusable: the error above says so
