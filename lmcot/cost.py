"""What each method costs: the tokens it asks the models for and the calls that reached one.

A user choosing between methods needs what the accuracy costs, not only the accuracy: the
reader's tokens per question (its prompts' prefill and its answers), the student's generated
tokens, the calls that really reached a model (a cached re-run makes none) and the wall time.
Tokens are the work a method *asks for*, counted whether or not the cache served it, so a
cached re-run reports the same work as the run that made it. They are counted with each
model's own tokenizer (an API model's by :func:`lmcot.prompts.approximate_tokens`), the rule
prompts are fitted with; loading a tokenizer is not loading the model.
"""

import time
from collections import Counter

from lmcot.lm.base import LM
from lmcot.prompts import token_counter


class Meter:
    """Token tallies of the metered models, taken and reset once per method."""

    def __init__(self):
        self.tally: Counter[str] = Counter()

    def take(self) -> dict[str, int]:
        tally, self.tally = self.tally, Counter()
        return dict(tally)


class Metered:
    """``lm`` with its ``generate`` and ``logprobs`` tallied into ``meter`` as
    ``<role>_prompt_tokens`` (each prompt once per sample asked, a scored continuation
    included) and ``<role>_new_tokens`` (the generated text); every other attribute is
    ``lm``'s."""

    def __init__(self, lm: LM, meter: Meter, role: str):
        self.lm, self.meter, self.role = lm, meter, role
        self._count = None  # the tokenizer loads on the first count, not here

    def __getattr__(self, name: str):
        return getattr(self.lm, name)

    def count(self, text: str) -> int:
        if self._count is None:
            self._count = token_counter(self.lm)
        return self._count(text)

    def generate(self, prompts: list[str], params=None, n: int = 1) -> list[list[str]]:
        outputs = self.lm.generate(prompts, params, n)
        special = self.count("")  # what the tokenizer adds to any text (BOS, EOS)
        self.meter.tally[f"{self.role}_prompt_tokens"] += n * sum(map(self.count, prompts))
        self.meter.tally[f"{self.role}_new_tokens"] += sum(
            self.count(o) - special for outs in outputs for o in outs
        )
        return outputs

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        scores = self.lm.logprobs(prompts, continuations)
        self.meter.tally[f"{self.role}_prompt_tokens"] += sum(
            self.count(p + c) for p, c in zip(prompts, continuations)
        )
        return scores


class MethodCost:
    """Times one method and reads what it asked of the models: ``cost.<method>``."""

    FIELDS = ("reader_prompt_tokens", "reader_new_tokens", "student_new_tokens")

    def __init__(self, meter: Meter, reader: LM):
        self.meter, self.reader = meter, reader

    def __enter__(self):
        self.meter.take()  # whatever ran before belongs to no method
        self.calls, self.start = self.reader.backend_calls, time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        tally = self.meter.take()
        self.cost = {k: tally.get(k, 0) for k in self.FIELDS}
        self.cost["reader_calls_made"] = self.reader.backend_calls - self.calls
        self.cost["seconds"] = round(time.perf_counter() - self.start, 3)
