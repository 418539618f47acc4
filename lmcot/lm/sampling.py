"""``generate``'s sampling arguments, with top-p computed over the top-k logits only.

transformers samples through three warpers in turn: temperature, top-k (50 unless the model's
generation config says otherwise) and top-p. Its top-p warper sorts the whole vocabulary
although top-k has left only k finite logits: for SmolLM2's 49,152 tokens that sort costs
214 ms a decoding step at 80 rows on 2 CPU cores, a third of a self-consistency step.
:class:`Nucleus` does the three in one processor and sorts only the k kept logits; the
logits it returns, and so the samples drawn from them, are the warpers' own (tested).
"""

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from lmcot.lm.base import GenerationParams


class Nucleus(LogitsProcessor):
    """Temperature, then top-k (0: off), then top-p, as transformers' warpers in that order.

    Args:
        temperature: divides the logits (> 0).
        top_k: keep the k largest logits (and any tied with the k-th, as the warper does).
        top_p: then keep the smallest set of them whose probability reaches ``top_p``.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature
        vocab = scores.shape[-1]
        k = min(self.top_k, vocab) if self.top_k else vocab
        if k == vocab and self.top_p >= 1.0:
            return scores  # the whole distribution (RL rollouts)
        kept, index = scores.topk(k)  # descending
        if k < vocab and ((scores >= kept[:, -1:]).sum(-1) > k).any():
            kept, index = scores.sort(descending=True)  # a tie at the k-th logit: keep it too
            kept = kept.masked_fill(kept < kept[:, k - 1 : k], -float("inf"))
        if self.top_p < 1.0:
            # ascending, as the warper: drop what sums to at most 1 - top_p, keep the largest
            cumulative = kept.flip(-1).softmax(-1).cumsum(-1).flip(-1)
            drop = cumulative <= 1 - self.top_p
            drop[:, 0] = False
            kept = kept.masked_fill(drop, -float("inf"))
        return torch.full_like(scores, -float("inf")).scatter(-1, index, kept)


def sampling(params: GenerationParams, top_k: int) -> dict:
    """``generate``'s decoding arguments: greedy, or sampled through :class:`Nucleus` with
    the params' temperature and top-p and the model's ``top_k`` (its warpers switched off)."""
    if params.greedy:
        return {"do_sample": False}
    nucleus = Nucleus(params.temperature, top_k, params.top_p)
    return {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
            "logits_processor": LogitsProcessorList([nucleus])}  # fmt: skip
