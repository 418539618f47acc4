"""Keyed sampling (the Gumbel-max draw) and rollouts' inverse-CDF draw: each a draw from the warped
distribution."""

import unittest.mock

import torch
from transformers import TopKLogitsWarper

from lmcot.lm.sampling import GumbelNoise, InverseCDFDraw, seeded


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


def test_inverse_cdf_draws_the_softmax_of_the_whole_vocabulary():
    """Every token in proportion to its probability, never one of mass 0 (not even the last
    token when a draw lands at the top of the cumulative mass), the global RNG's draws."""
    logits = torch.tensor([[0.5, 2.0, -float("inf"), 1.0, -4.0, 0.0, 1.5, -1.0, 0.3, 2.5]])
    draw = InverseCDFDraw()
    torch.manual_seed(0)
    picked = draw(None, logits.repeat(20_000, 1))
    assert torch.isfinite(picked).sum(1).eq(1).all() and picked.max() == 0
    frequencies = torch.bincount(picked.argmax(1), minlength=10) / 20_000
    assert frequencies[2] == 0
    assert torch.allclose(frequencies, logits.softmax(-1)[0], atol=0.01)
    torch.manual_seed(0)
    assert torch.equal(draw(None, logits.repeat(20_000, 1)), picked)


def test_inverse_cdf_at_the_top_of_the_cumulative_mass_takes_the_last_token_with_mass():
    logits = torch.tensor([[0.0, 1.0, -float("inf"), -float("inf")]])
    with unittest.mock.patch("torch.rand", lambda *shape, **_: torch.ones(*shape)):
        assert InverseCDFDraw()(None, logits).argmax(1).item() == 1
