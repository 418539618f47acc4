"""Sampling through Nucleus gives transformers' own warpers' logits, and so the same samples."""

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lmcot.lm.base import GenerationParams
from lmcot.lm.sampling import Nucleus
from tests.test_hf_backend import tiny_causal
from tests.test_prefix import PROMPTS


def warpers(temperature, top_k, top_p):
    steps = [TemperatureLogitsWarper(temperature)]
    steps += [TopKLogitsWarper(top_k)] if top_k else []
    steps += [TopPLogitsWarper(top_p)] if top_p < 1 else []
    return LogitsProcessorList(steps)


@pytest.mark.parametrize("top_k", [50, 0, 3])
@pytest.mark.parametrize("top_p", [0.95, 0.5, 1.0])
def test_nucleus_equals_the_warpers(top_k, top_p):
    torch.manual_seed(0)
    scores = torch.randn(6, 1000) * 3
    ids = torch.zeros(6, 1, dtype=torch.long)
    expected = warpers(0.7, top_k, top_p)(ids, scores.clone())
    assert torch.equal(Nucleus(0.7, top_k, top_p)(ids, scores.clone()), expected)


def test_a_tie_at_the_kth_logit_is_kept_as_the_warper_keeps_it():
    scores = torch.tensor([[5.0, 4.0, 3.0, 3.0, 3.0, 1.0, 0.0]])
    ids = torch.zeros(1, 1, dtype=torch.long)
    got = Nucleus(1.0, 3, 1.0)(ids, scores.clone())
    assert torch.equal(got, warpers(1.0, 3, 1.0)(ids, scores.clone()))
    assert torch.isfinite(got).sum() == 5


def test_generate_draws_the_same_samples_as_the_warpers(tokenizer_dir):
    """The cache keys SC samples by seed and index: they must not change with the processor."""
    lm = tiny_causal(tokenizer_dir, batch_size=4)
    params = GenerationParams(max_new_tokens=8, temperature=0.7, top_p=0.95, seed=3)
    batch = lm.tokenizer(PROMPTS[:3], return_tensors="pt", padding=True)
    torch.manual_seed(params.seed)
    ours = lm._sample(batch, params, n=4)
    torch.manual_seed(params.seed)
    theirs = lm.model.generate(**batch, max_new_tokens=8, num_return_sequences=4,
                               pad_token_id=lm.tokenizer.pad_token_id, do_sample=True,
                               temperature=0.7, top_p=0.95)  # fmt: skip
    assert torch.equal(ours, theirs)
    assert len({tuple(row) for row in ours.tolist()}) > 1  # sampled, not greedy
