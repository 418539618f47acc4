"""Sampling whose draws belong to the caller: each sample a function of its cache key, and no
model call that moves torch's global random state; and RL's rollouts, drawn from the whole
vocabulary on the global RNG that the RL step seeds (:func:`vocabulary_sampling`).

``generate(do_sample=True)`` draws every row of a batch from torch's one global generator, so a
sample depends on which prompts share its batch and in what order (``data.limit``,
``batch_size``, ``write_every`` and prefix reuse all change the batches), and every call moves
the global state that training's shuffles and initialisations draw from. Here each row gets its
own generator, seeded from its key (prompt, sample index, seed), and the sample is the Gumbel-max
of the warped logits: ``argmax(log p + G)`` with ``G ~ Gumbel(0, 1)`` is a draw from ``p``
(so the distribution is the one ``generate`` samples from: temperature, top-k, top-p). Rows
draw one noise vector per step whatever the others do, so a row's sample is the same in any
batch, up to floating-point differences between batch shapes (a flip needs two perturbed
logits within rounding of each other).
"""

import contextlib
import hashlib

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lmcot.lm.base import GenerationParams

DEFAULT_TOP_K = 50  # what transformers' sampling keeps when a generation config sets no top_k


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device = "cpu"):
    """Run the block on torch's RNG seeded with ``seed``, then restore the state it had: a model
    call or a training step draws reproducibly without moving what later code draws."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def row_seed(prompt: str, seed: int) -> int:
    """A 63-bit generator seed from a prompt (as its cache key holds it) and a sample's seed.

    >>> row_seed("Q: a?", 0) == row_seed("Q: a?", 0) != row_seed("Q: a?", 1)
    True
    """
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class GumbelNoise(LogitsProcessor):
    """Adds ``Gumbel(0, 1)`` noise to each row's scores from that row's own generator.

    With ``candidates`` (the top-k that the warpers before kept) a row draws that many values
    per step and gives them to its k likeliest tokens in token-id order, so noise costs k
    draws, not a vocabulary's; the others stay as they are (``-inf``). Without, every token
    gets its own draw.
    """

    def __init__(self, seeds: list[int], candidates: int | None = None):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.candidates = candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        if len(self.generators) != len(scores):
            raise ValueError(f"{len(self.generators)} row seeds for {len(scores)} rows")
        k = min(self.candidates or scores.shape[1], scores.shape[1])
        uniform = torch.stack([torch.rand(k, generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20))).to(scores)
        if k == scores.shape[1]:
            return scores + gumbel
        ids = scores.topk(k, dim=1).indices.sort(dim=1).values  # the kept tokens, by id
        noised = torch.full_like(scores, -float("inf"))
        return noised.scatter_(1, ids, scores.gather(1, ids) + gumbel)


def keyed_sampling(params: GenerationParams, seeds: list[int], top_k: int | None) -> dict:
    """``generate`` arguments that draw row ``r`` from generator ``seeds[r]``: greedy decoding
    over the warped, Gumbel-perturbed scores. ``top_k``: the model's generation config's."""
    warpers = [TemperatureLogitsWarper(params.temperature)]
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if params.top_p < 1:
        warpers.append(TopPLogitsWarper(params.top_p))
    processors = LogitsProcessorList([*warpers, GumbelNoise(seeds, candidates=top_k or None)])
    return {"do_sample": False, "logits_processor": processors}


class InverseCDFDraw(LogitsProcessor):
    """Draws each row's next token from the softmax of its scores (as warped before it) by
    inverse transform sampling, and leaves that token the only finite score, so that greedy
    decoding takes it: one uniform a row from torch's global RNG, looked up in the row's
    cumulative distribution. A token of mass 0 is never drawn; a token's share is exact to one
    fp32 rounding of the cumulative mass (~6e-8).

    Why not ``generate``'s own sampling: ``torch.multinomial`` over a 49k-token vocabulary runs
    on one thread, 63 ms a step at 64 rows (29% of a rollout's decoding step on a 2-core CPU,
    docs/performance.md); this costs ~3 ms.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        cdf = scores.float().softmax(-1).cumsum(-1)
        total = cdf[:, -1:]
        uniform = torch.rand(len(scores), 1, device=scores.device) * total
        # below the total, so the first token whose cumulative mass exceeds it has mass > 0
        uniform = torch.minimum(uniform, torch.nextafter(total, torch.zeros_like(total)))
        drawn = torch.searchsorted(cdf, uniform, right=True)
        picked = torch.full_like(scores, -float("inf"))
        return picked.scatter_(1, drawn, 0.0)


def vocabulary_sampling(params: GenerationParams) -> dict:
    """``generate`` arguments that sample from the whole vocabulary (no top-k; top-p if set) on
    the global RNG: RL's rollouts, whose ratios and KL estimates assume samples from the
    softmax the policy trains. Greedy when ``params`` are."""
    if params.greedy:
        return {"do_sample": False}
    warpers = [TemperatureLogitsWarper(params.temperature)]
    if params.top_p < 1:
        warpers.append(TopPLogitsWarper(params.top_p))
    return {
        "do_sample": False,
        "logits_processor": LogitsProcessorList([*warpers, InverseCDFDraw()]),
    }
