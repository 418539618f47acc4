"""A question's prompt computed once for its group gives the log-probs and gradients of the rows
run whole, for both model kinds, with left padding and prompts of different lengths."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AttentionInterface,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from lmcot import memory, rl
from lmcot.lm.grouped import (
    completion_logits,
    logits_after,
    prompt_states,
    use_grouped_attention,
)

QUESTIONS, GROUP, PROMPT, WIDTH, VOCAB = 3, 4, 9, 5, 50


def llama(attn: str):
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         attn_implementation=attn)  # fmt: skip
    return LlamaForCausalLM(config)


def t5(attn: str):
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, dropout_rate=0.0)  # fmt: skip
    return T5ForConditionalGeneration(config)


def batch(encoder_decoder: bool):
    """Prompts of different lengths (padded left for a decoder, right for an encoder) and
    right-padded completions of different lengths."""
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(1, VOCAB, (QUESTIONS, PROMPT), generator=g)
    lengths = torch.tensor([PROMPT, PROMPT - 3, PROMPT - 6])[:, None]
    index = torch.arange(PROMPT)[None]
    prompt_mask = (index < lengths) if encoder_decoder else (index >= PROMPT - lengths)
    prompt_ids = prompt_ids * prompt_mask
    completion_ids = torch.randint(1, VOCAB, (QUESTIONS * GROUP, WIDTH), generator=g)
    done = torch.randint(1, WIDTH + 1, (QUESTIONS * GROUP, 1), generator=g)
    completion_mask = (torch.arange(WIDTH)[None] < done).float()
    return prompt_ids, prompt_mask.long(), completion_ids * completion_mask.long(), completion_mask


@pytest.mark.parametrize("attn", ["sdpa", "eager", "grouped", "grouped, checkpointed"])
@pytest.mark.parametrize("build", [llama, t5], ids=["decoder-only", "encoder-decoder"])
def test_shared_prompt_gives_the_log_probs_and_gradients_of_whole_rows(build, attn, monkeypatch):
    """``grouped``: attention by parts (:func:`use_grouped_attention`), also with the layers'
    activations recomputed in the backward, as refine runs it."""
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q", "v", "q_proj", "v_proj"])
    model = get_peft_model(build(attn.split(",")[0].replace("grouped", "sdpa")), lora)
    for p in model.parameters():  # LoRA's B starts at zero: give the adapters a gradient path
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    model.eval()
    layouts = []
    if attn.startswith("grouped"):
        use_grouped_attention(model)
        if not model.config.is_encoder_decoder:  # a spy on the registered function
            name = model.config._attn_implementation
            run = AttentionInterface._global_mapping[name]
            spy = lambda *a, **k: layouts.append(k.get("layout")) or run(*a, **k)  # noqa: E731
            monkeypatch.setitem(AttentionInterface._global_mapping, name, spy)
    if attn.endswith("checkpointed"):
        memory.checkpoint_layers(model)
        memory.recompute_in_eval(model)
    prompt_ids, prompt_mask, completion_ids, mask = batch(model.config.is_encoder_decoder)
    weights = torch.randn(completion_ids.shape)
    results = []
    for shared in (False, True):
        model.zero_grad()
        logits, hidden = completion_logits(model, prompt_ids, prompt_mask, completion_ids,
                                           hidden=True, shared=shared)  # fmt: skip
        logp = rl.selective_logprobs(logits.float(), completion_ids)
        (logp * weights * mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((logp * mask, hidden * mask[..., None], grads))
    (logp0, hidden0, grads0), (logp1, hidden1, grads1) = results
    if layouts:  # whole rows: no layout; shared: every layer's attention by parts
        assert any(x is None for x in layouts) and any(x is not None for x in layouts)
    torch.testing.assert_close(logp1, logp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden1, hidden0, atol=1e-5, rtol=1e-5)
    assert grads0.keys() == grads1.keys() and grads0
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], atol=1e-5, rtol=1e-4)


def test_a_completion_does_not_see_its_neighbours():
    """Changing one completion's tokens leaves every other completion's log-probs alone."""
    torch.manual_seed(0)
    model = llama("sdpa").eval()
    prompt_ids, prompt_mask, completion_ids, _ = batch(False)
    changed = completion_ids.clone()
    changed[1] = (changed[1] + 7) % VOCAB
    with torch.no_grad():
        before, _ = completion_logits(model, prompt_ids, prompt_mask, completion_ids)
        after, _ = completion_logits(model, prompt_ids, prompt_mask, changed)
    others = [i for i in range(len(completion_ids)) if i != 1]
    torch.testing.assert_close(after[others], before[others])
    torch.testing.assert_close(after[1, 0], before[1, 0])  # its first token: the prompt's logits
    assert not torch.allclose(after[1, 1:], before[1, 1:])


@pytest.mark.parametrize("build", [llama, t5], ids=["decoder-only", "encoder-decoder"])
def test_kept_prompt_states_give_the_logits_of_whole_rows_call_after_call(build):
    """The probe's reference: its prompts computed once, then each call's completions alone
    give the logits of the rows run whole, and leave the kept states as they were."""
    torch.manual_seed(0)
    model = build("sdpa").eval()
    prompt_ids, prompt_mask, completion_ids, mask = batch(model.config.is_encoder_decoder)
    completion_ids, mask = completion_ids[::GROUP], mask[::GROUP]  # one completion a prompt
    states = prompt_states(model, prompt_ids, prompt_mask)
    for completions in (completion_ids, (completion_ids + 3) % VOCAB):
        with torch.no_grad():
            whole, _ = completion_logits(model, prompt_ids, prompt_mask, completions)
        kept = logits_after(model, states, prompt_ids, prompt_mask, completions)
        torch.testing.assert_close(kept * mask[..., None], whole * mask[..., None],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
