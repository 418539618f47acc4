"""Validate the rationale scorers: does each prefer the gold rationale to a corrupted copy?

    python -m lmcot.rewards.validate data=hotpotqa data.path=FILE
    python -m lmcot.rewards.validate data=hotpotqa data.path=FILE validate.aspects=[factuality]

For every row and every source of ``validate.sources``, the intact rationale is paired with the
corruptions its aspect is about, applied to that rationale's facts. Sources: ``verbatim`` (gold
supporting sentences + "So the answer is X.") and ``paraphrased`` (the same facts reworded by
:mod:`lmcot.rewards.paraphrase`; rows where no rule applies are left out). The corruptions
are ``lmcot.rewards.corrupt.ASPECT_CORRUPTIONS`` (or ``validate.corruptions``); every scorer
node of ``validate.backends.<aspect>.<label>`` (a ``reward/scorer`` option, the label usually
its name) scores both, on the first
``validate.row_limits.<label>`` rows (all rows when unset). The preference accuracy of a backend is
the share of pairs where the intact rationale scores higher (a tie counts one half; a pair where
either score is None is skipped and counted). Writes into the run dir:

- ``validation.json``: ``{source: {aspect: {backend: preference_accuracy}}}``;
- ``validation_details.json``: pairs, skipped, accuracy per corruption, seconds, and with
  ``validate.throughput=true`` rationales/s of each model-free or embedding backend, batched vs
  one rationale at a time.
"""

import copy
import json
import logging
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lmcot.data.example import Example
from lmcot.rewards.corrupt import ASPECT_CORRUPTIONS, corrupt, with_conclusion
from lmcot.rewards.paraphrase import paraphrase_facts
from lmcot.rewards.registry import build_scorer
from lmcot.tasks import task_wrapper

log = logging.getLogger(__name__)

# backends timed by validate.throughput: the cheap ones (the judge and reader cost prompts)
TIMED = ("lexical", "embedding", "flesch", "answer_match", "perplexity")


def preference(intact: float | None, corrupted: float | None) -> float | None:
    """1 if the intact rationale scores higher, 0.5 on a tie, 0 if lower, None if unscored.

    >>> preference(0.9, 0.4), preference(0.5, 0.5), preference(0.2, 0.3), preference(None, 0.1)
    (1.0, 0.5, 0.0, None)
    """
    if intact is None or corrupted is None:
        return None
    return 1.0 if intact > corrupted else 0.5 if intact == corrupted else 0.0


SOURCES = ("verbatim", "paraphrased")


def intact_facts(example: Example, source: str) -> list[str] | None:
    """The intact rationale's facts from ``source``; None where a paraphrase changes nothing."""
    if source == "verbatim":
        return example.supporting_sentences()
    if source == "paraphrased":
        facts, changed = paraphrase_facts(example)
        return facts if changed else None
    raise ValueError(f"validate.sources: unknown source {source!r}; sources: {SOURCES}")


def build_pairs(
    examples: list[Example], corruptions: list[str], seed: int = 0, source: str = "verbatim"
) -> list[tuple[Example, str, str, str]]:
    """``(example, corruption, intact, corrupted)`` for every row where a corruption applies."""
    pairs = []
    for example in examples:
        facts = intact_facts(example, source)
        if facts is None:
            continue
        intact = with_conclusion(example, facts)
        for name in corruptions:
            corrupted = corrupt(example, name, seed, facts)
            if corrupted is not None and corrupted != intact:
                pairs.append((example, name, intact, corrupted))
    return pairs


def score_pairs(scorer, pairs: list[tuple[Example, str, str, str]]) -> dict:
    """Score both sides of every pair in one batched call; accuracy overall and per corruption."""
    texts = dict.fromkeys((ex.id, text) for ex, _, intact, bad in pairs for text in (intact, bad))
    by_id = {ex.id: ex for ex, *_ in pairs}
    keys = list(texts)
    start = time.perf_counter()
    scores = scorer([""] * len(keys), [t for _, t in keys], examples=[by_id[i] for i, _ in keys])
    seconds = time.perf_counter() - start
    score = dict(zip(keys, scores))
    wins: dict[str, list[float]] = {}
    skipped = 0
    for ex, name, intact, bad in pairs:
        p = preference(score[(ex.id, intact)], score[(ex.id, bad)])
        if p is None:
            skipped += 1
        else:
            wins.setdefault(name, []).append(p)
    every = [p for ps in wins.values() for p in ps]
    return {
        "accuracy": sum(every) / len(every) if every else None,
        "pairs": len(every),
        "skipped": skipped,
        "by_corruption": {name: sum(ps) / len(ps) for name, ps in wins.items()},
        "rationales": len(keys),
        "seconds": round(seconds, 3),
    }


def throughput(scorer, examples: list[Example], texts: list[str]) -> dict[str, float]:
    """Rationales/s scoring ``texts`` in one call vs one call per rationale (memos cleared)."""
    rates = {}
    for mode in ("batched", "one_at_a_time"):
        _forget(scorer)
        start = time.perf_counter()
        if mode == "batched":
            scorer([""] * len(texts), texts, examples=examples)
        else:
            for ex, text in zip(examples, texts):
                scorer([""], [text], examples=[ex])
        rates[mode] = round(len(texts) / (time.perf_counter() - start), 1)
    return rates


def _forget(scorer) -> None:
    # time the work, not the memo: embeddings and LM scores are recomputed (and, for the rest of
    # this process, no longer written to the scorers' disk caches)
    embedder = getattr(scorer, "embedder", None)
    if embedder is not None:
        embedder._memo.clear()
        embedder.cache = None
    if hasattr(scorer, "cache") and embedder is None:
        scorer.cache = None
    if getattr(scorer, "lm", None) is not None and scorer.lm.cache is not None:
        scorer.lm = copy.copy(scorer.lm)
        scorer.lm.cache = None


@task_wrapper
def validate(cfg: DictConfig) -> dict:
    """Preference accuracy of every configured backend on every configured aspect."""
    examples = instantiate(cfg.data)
    if not examples:
        raise ValueError(f"data config {cfg.data._target_} produced no examples")
    reader = instantiate(cfg.reader)
    custom = cfg.validate.corruptions
    mapping = {**ASPECT_CORRUPTIONS, **(OmegaConf.to_container(custom) if custom else {})}
    limits = cfg.validate.row_limits or {}
    table, details = {}, {}
    for source in cfg.validate.sources:
        for aspect in cfg.validate.aspects:
            for backend, node in cfg.validate.backends.get(aspect, {}).items():
                rows = examples[: limits.get(backend, len(examples))]  # keyed by label
                pairs = build_pairs(rows, mapping[aspect], cfg.seed, source)
                if not pairs:  # e.g. validate.row_limits.llm_judge=0 turns a backend off
                    continue
                scorer = build_scorer(node, aspect, reader)
                result = score_pairs(scorer, pairs)
                if cfg.validate.throughput and node.backend in TIMED:
                    # 32 rationales (16 through an LM): enough for a rate, cheap to re-run
                    n = 16 if node.backend == "perplexity" else 32
                    texts = [text for _, _, intact, bad in pairs for text in (intact, bad)][:n]
                    batch = [ex for ex, *_ in pairs for _ in (0, 1)][:n]
                    result["rationales_per_s"] = throughput(scorer, batch, texts)
                log.info("%s / %s / %s: %s", source, aspect, backend, result)
                table.setdefault(source, {}).setdefault(aspect, {})[backend] = result["accuracy"]
                details.setdefault(source, {}).setdefault(aspect, {})[backend] = {
                    "rows": len({ex.id for ex, *_ in pairs}),
                    **result,
                }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "validation_details.json").write_text(json.dumps(details, indent=2) + "\n")
    for source in table:
        print(f"\n{source} intact rationales\n" + markdown_table(table[source], details[source]))
    return table


def markdown_table(table: dict, details: dict) -> str:
    """Aspect x backend preference accuracy (pairs in parentheses), as docs/rewards.md shows it."""
    backends = list(dict.fromkeys(b for row in table.values() for b in row))
    lines = ["| aspect | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for aspect, row in table.items():
        cells = [
            f"{row[b]:.2f} ({details[aspect][b]['pairs']})" if row.get(b) is not None else "–"
            for b in backends
        ]
        lines.append(f"| {aspect} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="validate")
def main(cfg: DictConfig) -> None:
    validate(cfg)


if __name__ == "__main__":
    main()
