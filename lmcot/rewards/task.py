"""The task reward: the reader answers with the rationale; EM or F1 against the gold answers,
or (dense) the probability the reader gives the gold answer."""

import dataclasses
import math

from lmcot.lm.base import LM
from lmcot.metrics import exact_match, f1
from lmcot.prompts import FewShotPrompt, extract_answer
from lmcot.rewards.base import register, require_examples

METRICS = {"em": exact_match, "f1": f1}


@register("task", "reader")
class TaskReward:
    """Reward of the paper's end task: the frozen reader answers from question + context +
    rationale with the ``guided`` prompt, and the answer is scored against the gold answers.

    Args:
        lm: the reader. Its cache makes a rationale scored twice cost one reader call.
        prompt: the LM-guided answering prompt (``${prompts.guided}``).
        metric: ``em`` (the paper's) or ``f1`` (denser: small readers rarely match exactly).
        context: ``full`` (the paper's: question + context + rationale) or ``none`` (question +
            rationale only: the reader cannot bypass the rationale, and on CPU a prompt of ~300
            instead of ~1,500 tokens, several times cheaper).

    In [0, 1]. Reads gold answers: a training or evaluation signal, never a test-time one.
    The answers themselves (``answers``) are the ``reader_answers`` column of the consistency
    scorer; the registry computes them once and passes them on.
    Blind spots: the reader may answer right despite a bad rationale (from the context alone) or
    wrong despite a good one; with a small reader, formatting failures dominate.
    """

    uses_gold = True

    def __init__(self, lm: LM, prompt: FewShotPrompt, metric: str = "em", context: str = "full"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if context not in ("full", "none"):
            raise ValueError(f"context must be 'full' or 'none', got {context!r}")
        if isinstance(prompt, dict):  # a config node handed over as a plain dict
            prompt = FewShotPrompt(**{k: v for k, v in prompt.items() if k != "_target_"})
        self.lm, self.prompt, self.metric, self.context = lm, prompt, metric, context

    def rendered(self, completions, **columns) -> tuple[list[str], list]:
        """(the reader's prompt for each rationale, the examples)."""
        examples = require_examples(columns, completions, "task")
        shown = examples
        if self.context == "none":
            shown = [dataclasses.replace(ex, context=[]) for ex in examples]
        return [self.prompt.render(ex, rationale=c) for ex, c in zip(shown, completions)], examples

    def answers(self, prompts, completions, **columns) -> list[str]:
        """The reader's answer given each rationale (cached by the reader)."""
        rendered, _ = self.rendered(completions, **columns)
        return [extract_answer(out[0]) for out in self.lm.generate(rendered, self.prompt.params)]

    def extra_columns(self, prompts, completions, **columns) -> dict[str, list]:
        """Columns this scorer produces for the others: ``reader_answers``."""
        return {"reader_answers": self.answers(prompts, completions, **columns)}

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = require_examples(columns, completions, "task")
        answers = columns.get("reader_answers") or self.answers(prompts, completions, **columns)
        score = METRICS[self.metric]
        return [score(a, ex.golds) for a, ex in zip(answers, examples)]


@register("task", "reader_likelihood")
class GoldLikelihood(TaskReward):
    """A dense task reward: the probability the reader gives the gold answer (the likeliest of
    its aliases) after question, context and rationale, ``P(" gold" | guided prompt)``.

    EM of a small reader is 0 or 1 and mostly the same for every rationale of a question, so a
    group's samples rarely differ in it; the gold answer's probability moves with each
    rationale. One forward per pair, the prompt's shared prefix reused by the reader
    (:mod:`lmcot.lm.prefix`), cached like its answers. Needs a reader with log-probabilities.

    Args: as :class:`TaskReward` without ``metric``.
    """

    def __init__(self, lm: LM, prompt: FewShotPrompt, context: str = "full"):
        super().__init__(lm, prompt, "em", context)

    def extra_columns(self, prompts, completions, **columns) -> dict[str, list]:
        return {}  # no answers generated: consistency falls back to the gold answer

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        rendered, examples = self.rendered(completions, **columns)
        pairs = [(p, f" {gold}") for p, ex in zip(rendered, examples) for gold in ex.golds]
        logp = iter(self.lm.logprobs([p for p, _ in pairs], [g for _, g in pairs]))
        return [max(math.exp(next(logp)) for _ in ex.golds) for ex in examples]
