"""The scorer contract, the table of scorers by (aspect, backend), and the factory configs call.

Every scorer is a callable with TRL's reward shape::

    scorer(prompts: list[str], completions: list[str], **columns) -> list[float | None]

``completions`` are rationales; ``prompts`` are the student's prompts (most scorers ignore them).
``columns`` (unknown ones are ignored, so callers can pass everything they have):

- ``examples: list[Example]``, aligned with ``completions``: question, context, gold answer and
  supporting facts. Required by every scorer that needs more than the rationale's text.
- ``reader_answers: list[str]``, optional: the reader's answer given each rationale. The
  consistency scorer prefers it to the gold answer ("the answer the rationale leads to").

``None`` means "not applicable" (an empty rationale, a one-sentence rationale for coherence);
the registry leaves it out of the aggregate. A scorer says whether it reads gold annotations
(``uses_gold``): selecting rationales at test time (``decoding=top_quality``) must not.
"""

import importlib
import inspect
from collections.abc import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from lmcot.data.example import Example

ASPECTS = (
    "factuality", "relevance", "logicality", "consistency",
    "coherence", "fluency", "naturalness", "readability", "task",
)  # fmt: skip

# backend name -> module that registers it (imported on first use: some import torch)
BACKENDS = {
    "llm_judge": "lmcot.rewards.llm_judge",
    "embedding": "lmcot.rewards.embedding",
    "lexical": "lmcot.rewards.lexical",
    "perplexity": "lmcot.rewards.fluency",
    "flesch": "lmcot.rewards.readability",
    "answer_match": "lmcot.rewards.consistency",
    "reader": "lmcot.rewards.task",
    "reader_likelihood": "lmcot.rewards.task",
}

SCORERS: dict[tuple[str, str], type] = {}


def register(aspect: str, backend: str):
    """Class decorator: ``SCORERS[(aspect, backend)] = cls`` (one class may serve many aspects)."""
    if aspect not in ASPECTS:
        raise ValueError(f"unknown aspect {aspect!r}; aspects: {', '.join(ASPECTS)}")
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown backend {backend!r}; add it to BACKENDS ({', '.join(BACKENDS)})"
        )

    def wrap(cls):
        SCORERS[(aspect, backend)] = cls
        return cls

    return wrap


def backends_for(aspect: str) -> list[str]:
    """The backends that can score ``aspect`` (imports every backend module)."""
    for module in BACKENDS.values():
        importlib.import_module(module)
    return [b for (a, b) in SCORERS if a == aspect]


def scorer_class(backend: str, aspect: str) -> type:
    """The class :func:`make_scorer` builds for ``backend`` and ``aspect`` (its module imported).

    Raises:
        ValueError: no such backend for this aspect.
    """
    if backend in BACKENDS:
        importlib.import_module(BACKENDS[backend])
    if (aspect, backend) not in SCORERS:
        raise ValueError(
            f"no {backend!r} scorer for aspect {aspect!r}; "
            f"backends for {aspect}: {', '.join(backends_for(aspect))}"
        )
    return SCORERS[(aspect, backend)]


def make_scorer(backend: str, aspect: str, lm=None, **options):
    """Build the ``backend`` scorer of ``aspect``: the ``_target_`` of ``conf/reward/scorer/*``.

    Args:
        backend: a key of ``BACKENDS`` (the config file name: ``embedding``, ``llm_judge`` ...).
        aspect: filled in by whoever builds the node (``build_registry``, the validation entry).
        lm: the language model of LM-based scorers; ``build_registry`` passes the reader unless
            the node configures its own ``lm``. Scorers that need none ignore it.
        **options: the scorer class's constructor arguments.

    Raises:
        ValueError: no such backend for this aspect, or an LM-based scorer without an LM.
    """
    cls = scorer_class(backend, aspect)
    options = {
        k: OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
        for k, v in options.items()
    }
    accepted = inspect.signature(cls.__init__).parameters
    if "aspect" in accepted:
        options["aspect"] = aspect
    if "lm" in accepted:
        if lm is None:
            raise ValueError(f"the {backend} scorer of {aspect} needs an LM: pass lm=<reader>")
        options["lm"] = lm
    scorer = cls(**options)
    scorer.__name__ = aspect  # as TRL names a reward's metrics: rewards/<name>/mean
    return scorer


def require_examples(columns: dict, completions: Sequence[str], scorer: str) -> list[Example]:
    """The ``examples`` column, checked to be aligned with ``completions``."""
    examples = columns.get("examples")
    if examples is None:
        raise ValueError(f"{scorer} needs the column examples=[Example, ...] (one per completion)")
    if len(examples) != len(completions):
        raise ValueError(f"{scorer}: {len(examples)} examples for {len(completions)} completions")
    return list(examples)
