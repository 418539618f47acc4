"""Fluency and naturalness from a small LM's likelihood of the rationale.

The score is the geometric-mean token probability (1 / perplexity) of the rationale, followed by
an end-of-line, under a causal LM (the offline default: the reader, SmolLM2-135M):

.. math:: s = \\exp\\Big(\\frac{1}{T} \\log P(r \\, \\text{"\\\\n"} \\mid \\text{prefix})\\Big)

The end-of-line makes a rationale cut off mid-sentence pay for its abrupt ending. A sentence
that repeats an earlier one word for word is left out (``drop_repeats``): a copy is the likeliest
text an LM can read, so it raised 1 / perplexity, and RL learnt to repeat (docs/refine.md). The
log-probability goes through ``LM.logprobs`` (the LM's cache); the token count needs the LM's
tokenizer, which loads the model, so with ``cache`` the score itself is stored (keyed by the LM,
the prefix and the text) and a re-run over known rationales loads no model.
"""

import math

from lmcot.lm.base import LM, UnsupportedByBackend
from lmcot.lm.cache import ResponseCache
from lmcot.rewards.base import register
from lmcot.rewards.text import split_sentences


def token_count(lm: LM, text: str) -> int:
    """Tokens of ``text`` under the LM's tokenizer; whitespace words for backends without one."""
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        return max(1, len(text.split()))
    return max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))


def without_repeats(text: str) -> str:
    """``text`` without each sentence that repeats an earlier one (case and spacing aside);
    ``text`` itself when none does.

    >>> without_repeats("Ann sat. Ann  sat. So yes.")
    'Ann sat. So yes.'
    """
    sentences, seen, kept = split_sentences(text), set(), []
    for sentence in sentences:
        key = " ".join(sentence.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(sentence)
    return text if len(kept) == len(sentences) else " ".join(kept)


@register("fluency", "perplexity")
@register("naturalness", "perplexity")
class Perplexity:
    """1 / perplexity of the rationale under a small LM, in (0, 1]; None for an empty rationale.

    Args:
        lm: a causal LM with log-probabilities (the reader by default).
        aspect: ``fluency`` reads the rationale after a neutral prefix; ``naturalness`` after the
            question, so it asks how natural the text is as an explanation of *this* question.
        prefix: ``str.format`` pattern with ``{question}``; None picks the aspect's default.
        cache: SQLite file for the scores; None: only the log-probabilities are cached (by the
            LM), and counting tokens loads the LM's tokenizer and model.
        drop_repeats: score the rationale without the sentences that repeat an earlier one.

    Blind spots: a small LM's likelihood rewards short, common, repetitive wording (a sentence
    repeated with one word changed still pays, as does a rationale that repeats the question);
    rare names and numbers cost probability whatever the grammar; scores depend on the LM and
    are only comparable under the same one. Naturalness needs the ``examples`` column for the
    question; fluency reads only the rationale.
    """

    uses_gold = False
    PREFIXES = {"fluency": "Explanation:", "naturalness": "Question: {question}\nExplanation:"}

    def __init__(self, lm: LM, aspect: str = "fluency", prefix: str | None = None,
                 cache: str | None = None, drop_repeats: bool = True):  # fmt: skip
        self.lm, self.aspect, self.drop_repeats = lm, aspect, drop_repeats
        self.prefix = prefix if prefix is not None else self.PREFIXES[aspect]
        # a server may only score single tokens: every rationale would score exp(-inf) = 0.0,
        # silently, so refuse now, before any work (local transformers models always can)
        supports = getattr(lm, "supports_continuation_logprobs", None)
        if supports is not None and not supports():
            raise UnsupportedByBackend(
                f"reward aspect {aspect!r} (perplexity scorer) needs log-probs of whole "
                f"rationales, which {lm.cache_id} does not return (its server lacks echo + "
                f"logprobs on /completions). Use a server that has them (vLLM, llama.cpp), give "
                f"the scorer a local transformers LM (reward.scorers.{aspect}.lm, a reader-shaped "
                f"node such as conf/reader/smollm2.yaml), or another backend for the aspect "
                f"(reward/scorer@reward.scorers.{aspect}=llm_judge)."
            )
        self.cache = ResponseCache(cache) if cache else None

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = columns.get("examples")
        if "{question}" in self.prefix and examples is None:
            raise ValueError(f"{self.aspect} needs the column examples=[Example, ...]")
        rows = [i for i, c in enumerate(completions) if c.strip()]
        prefixes = [
            self.prefix.format(question=examples[i].question if examples else "") for i in rows
        ]
        kept = [without_repeats(c) if self.drop_repeats else c for c in completions]
        texts = [f" {kept[i].strip()}\n" for i in rows]
        keys = [
            ResponseCache.key(f"perplexity:{self.lm.cache_id}", "score", p, {"text": t}, 0)
            for p, t in zip(prefixes, texts)
        ]
        known = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [j for j, k in enumerate(keys) if k not in known]
        logps = (
            self.lm.logprobs([prefixes[j] for j in todo], [texts[j] for j in todo]) if todo else []
        )
        fresh = {
            keys[j]: math.exp(logp / token_count(self.lm, texts[j]))
            for j, logp in zip(todo, logps)
        }
        if self.cache is not None and fresh:
            self.cache.put_many(fresh)
        known |= fresh
        scores: list[float | None] = [None] * len(completions)
        for i, key in zip(rows, keys):
            scores[i] = known[key]
        return scores
