"""Keyed sampling: the Gumbel-max draw is a draw from the warped distribution."""

import torch
from transformers import TopKLogitsWarper

from lmcot.lm.sampling import GumbelNoise, seeded


def frequencies(logits: torch.Tensor, candidates: int | None, draws: int = 4000) -> torch.Tensor:
    counts = torch.zeros(logits.shape[-1])
    for seed in range(draws):
        warped = TopKLogitsWarper(candidates)(None, logits.clone()) if candidates else logits
        counts[GumbelNoise([seed], candidates)(None, warped).argmax()] += 1
    return counts / draws


def test_gumbel_max_samples_the_softmax_of_the_kept_tokens():
    logits = torch.tensor([[0.5, 2.0, -1.0, 1.0, -4.0]])
    for candidates in (None, 3):
        kept = logits if candidates is None else TopKLogitsWarper(candidates)(None, logits.clone())
        expected = torch.softmax(kept[0], 0)
        assert torch.allclose(frequencies(logits, candidates), expected, atol=0.03), candidates


def test_rows_draw_from_their_own_generators():
    scores = torch.zeros(2, 8)
    alone = GumbelNoise([5])(None, scores[:1])
    together = GumbelNoise([9, 5])(None, scores)
    assert torch.equal(alone[0], together[1]) and not torch.equal(together[0], together[1])


def test_seeded_restores_the_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with seeded(42):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded(42):
        assert torch.equal(torch.rand(3), inside)
