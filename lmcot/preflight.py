"""What the entry points check before any data is read or model loaded: config values that would
otherwise fail (or silently mislead) hours into a run, and that the output and cache
directories can be written.

Each error names the config key and what was expected. Checks that a component already makes
when it is built cheaply (data options, teacher settings) stay there; here are only those
whose component is built late, after models have loaded: the reward registries (refine,
``top_quality``, ``rationale_quality``), the decodings (evaluate, the last stage), and every
size, count and sampling setting of the distillation and the refinement (after a teacher stage
that may take hours), of the models, the prompts and the data (:data:`SIZES`).

Student and reader tokenizers need not agree: each model fits its own prompts with its own
tokenizer (:func:`lmcot.prompts.token_counter`) and the two exchange only text, so nothing is
checked about them.
"""

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lmcot.distill import micro_batches
from lmcot.rewards.base import ASPECTS
from lmcot.rewards.registry import AGGREGATIONS

REWARD_NODES = ("reward", "quality", "selection")  # every reward registry a run may build


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# (accepts, what the message says is expected)
COUNT = (lambda v: _int(v) and v >= 1, "an integer >= 1")
COUNT_OR_ZERO = (lambda v: _int(v) and v >= 0, "an integer >= 0")
COUNT_OR_NULL = (lambda v: v is None or _int(v) and v >= 1, "null or an integer >= 1")
POSITIVE = (lambda v: _number(v) and v > 0, "a number > 0")
POSITIVE_OR_NULL = (lambda v: v is None or _number(v) and v > 0, "null or a number > 0")
NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "a number >= 0")
UNIT = (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")
FRACTION = (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)")
TOP_P = (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]")
SAMPLED = (lambda v: _number(v) and v > 0, "a number > 0 (these samples are drawn)")
GROUP = (lambda v: _int(v) and v >= 2,
         "an integer >= 2 (GRPO's advantages compare the samples of one question)")  # fmt: skip
CONFIDENCE = (lambda v: v is None or _number(v) and 0.5 < v <= 1, "null or a number in (0.5, 1]")

# Checked wherever the key is set (``*``: every child node, e.g. each decoding or scorer).
SIZES = (
    # the refine stage: rollouts, updates, validation, its rails
    ("refine.batch_size", COUNT), ("refine.steps_per_epoch", COUNT), ("refine.epochs", COUNT),
    ("refine.val_size", COUNT), ("refine.max_new_tokens", COUNT), ("refine.temperature", SAMPLED),
    ("refine.kl_limit", POSITIVE), ("refine.max_grad_norm", POSITIVE_OR_NULL),
    ("refine.log_table_every", COUNT_OR_ZERO), ("refine.optimizer.lr", POSITIVE),
    ("refine.algorithm.epochs", COUNT), ("refine.algorithm.minibatch_size", COUNT),
    ("refine.algorithm.group_size", GROUP), ("refine.algorithm.clip", POSITIVE),
    ("refine.algorithm.value_clip", POSITIVE_OR_NULL),  # null: the critic's plain MSE
    ("refine.algorithm.vf_coef", NON_NEGATIVE), ("refine.algorithm.value_lr", POSITIVE_OR_NULL),
    ("refine.algorithm.critic_warmup_steps", COUNT_OR_ZERO),
    ("refine.algorithm.gamma", UNIT), ("refine.algorithm.lam", UNIT),
    ("refine.algorithm.kl.coef", NON_NEGATIVE), ("refine.algorithm.kl.target", POSITIVE),
    ("refine.algorithm.kl.horizon", COUNT),
    # the distill stage (micro_batch_size: micro_batches below)
    ("distill.batch_size", COUNT), ("distill.max_target_length", COUNT),
    ("distill.val_fraction", FRACTION), ("distill.val_em_limit", COUNT_OR_ZERO),
    ("distill.optimizer.lr", POSITIVE),
    # evaluation: each prompt's answer or rationale length (first: decodings interpolate it),
    # each decoding
    ("prompts.*.generation.max_new_tokens", COUNT),
    ("prompts.*.generation.temperature", NON_NEGATIVE), ("prompts.*.generation.top_p", TOP_P),
    ("prompts.*.max_prompt_tokens", COUNT_OR_NULL),
    ("decoding.*.num_samples", COUNT), ("decoding.*.max_new_tokens", COUNT),
    ("decoding.*.temperature", SAMPLED), ("decoding.*.top_p", TOP_P),
    ("decoding.*.round_size", COUNT), ("decoding.*.confidence", CONFIDENCE),
    # models and scorers: batches and cache chunks
    ("reader.batch_size", COUNT), ("reader.write_every", COUNT),
    ("student.batch_size", COUNT), ("student.write_every", COUNT),
    *((f"{node}.scorers.*.batch_size", COUNT) for node in REWARD_NODES),
    *((f"{node}.normalize_window", COUNT) for node in REWARD_NODES),
    # data: an empty split fails only where it is read (evaluation: the last stage)
    ("data.limit", COUNT_OR_NULL), ("data.train_limit", COUNT_OR_NULL),
    ("data.num_examples", COUNT), ("data.num_train", COUNT),
)  # fmt: skip


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
    check_sizes(cfg)
    if "refine" in cfg.get("stages", ()):
        check_val_size(cfg)
    if "distill" in cfg:
        try:
            micro_batches(cfg.distill.batch_size, cfg.distill.get("micro_batch_size"))
        except ValueError as e:
            raise ConfigError(str(e)) from e
    for key in ("output_dir", "cache_dir"):
        check_writable(cfg.paths[key], f"paths.{key}")


def check_sizes(cfg: DictConfig) -> None:
    """Every key of :data:`SIZES` that the config sets holds a value its rule accepts."""
    for pattern, (accepts, expected) in SIZES:
        for key, value in _lookup(cfg, pattern):
            if not accepts(value):
                raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _lookup(node: DictConfig, pattern: str, prefix: str = ""):
    """(key, value) of each key that ``pattern`` matches. Only those values are resolved: a
    model path may be an interpolation that converts the model when resolved."""
    head, _, rest = pattern.partition(".")
    if head == "*":
        raw = OmegaConf.to_container(node, resolve=False)
        names = [name for name, value in raw.items() if isinstance(value, dict)]
    else:
        names = [head] if head in node else []
    for name in names:
        if not rest:
            yield prefix + name, node[name]
        elif OmegaConf.is_dict(child := node[name]):
            yield from _lookup(child, rest, f"{prefix}{name}.")


def check_val_size(cfg: DictConfig) -> None:
    """``refine.val_size`` against the training split's size where the config states it
    (``data.num_train``; ``data.train_limit`` bounds it): the refine stage holds out that many
    training questions and rolls out on the rest."""
    val_size = cfg.refine.val_size
    for key in ("num_train", "train_limit"):
        n = cfg.data.get(key)
        if n is not None and val_size >= n:
            raise ConfigError(
                f"refine.val_size must be below data.{key}={n}, got {val_size}: the refine "
                "stage holds out refine.val_size training questions and rolls out on the rest"
            )


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
