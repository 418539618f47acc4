"""Training forwards that compute a question's prompt once for its whole group of completions.

An RL step scores ``group_size`` completions of each prompt, and prompts are several times
longer than completions: run row by row, the same prompt is computed ``group_size`` times in
the policy's forward (with gradients), again for the old log-probs and again for the reference.

- Decoder-only: one sequence per question, ``prompt | c1 | ... | cG`` (the prompt left-padded,
  each completion in a slot of the same width), with a 4D attention mask and position ids that
  give every completion exactly the view it has alone: its prompt's real tokens and its own
  earlier tokens, at the positions it would have after its prompt (the idea of Prefix Grouper,
  arXiv 2506.05433). Logits are computed only where a completion token is predicted. With
  :func:`use_grouped_attention`, attention runs by parts instead of over the whole sequence
  under that mask: the prompt over itself once, and each completion over its prompt's keys
  (read in place, not copied per completion) and its own (:func:`grouped_attention`).
- Encoder-decoder: the encoder runs once per question; its states are repeated for the
  decoder rows (``repeat_interleave`` is differentiable: gradients of the copies add up).

A frozen model (the probe's reference) that scores new completions of the same prompts again
and again keeps what it computed of them (:func:`prompt_states`) and runs only the completions
(:func:`logits_after`).

Why hand-written: transformers has no grouped forward, TRL's GRPO runs every row whole, and
verl's shared-prefix path is tied to its FSDP workers. ``shared=False`` runs every row whole (the
reference the tests compare against, and the baseline of ``benchmarks/refine_steps.py``).
"""

import copy
import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmcot.lm.prefix import extend


def completion_logits(model, prompt_ids, prompt_mask, completion_ids, hidden: bool = False,
                      shared: bool = True):  # fmt: skip
    """Logits ``(N, T, V)`` predicting each completion token, and the last hidden states at
    those positions ``(N, T, H)`` when ``hidden`` (else None).

    ``prompt_ids``/``prompt_mask``: ``(Q, P)``, one row per question (left-padded for a
    decoder-only model); ``completion_ids``: ``(N, T)``, ``N = Q * G`` rows, question-major
    (rows ``q*G .. q*G+G-1`` complete prompt ``q``), right-padded.
    """
    group = completion_ids.shape[0] // prompt_ids.shape[0]
    if model.config.is_encoder_decoder:
        return _seq2seq(model, prompt_ids, prompt_mask, completion_ids, group, hidden, shared)
    if not shared or group == 1:  # one completion a prompt: nothing to share
        repeat = (x.repeat_interleave(group, 0) for x in (prompt_ids, prompt_mask))
        return _causal_rows(model, *repeat, completion_ids, hidden)
    return _causal_grouped(model, prompt_ids, prompt_mask, completion_ids, group, hidden)


def _decoder_ids(model, completion_ids):
    """An encoder-decoder's decoder inputs for ``completion_ids``: the start token, shifted."""
    start = torch.full_like(completion_ids[:, :1], model.config.decoder_start_token_id)
    return torch.cat([start, completion_ids[:, :-1]], 1)


def _seq2seq(model, prompt_ids, prompt_mask, completion_ids, group, hidden, shared):
    if shared:
        states = model.get_encoder()(input_ids=prompt_ids, attention_mask=prompt_mask)[0]
        inputs = {"encoder_outputs": BaseModelOutput(states.repeat_interleave(group, 0))}
    else:
        inputs = {"input_ids": prompt_ids.repeat_interleave(group, 0)}
    out = model(**inputs, attention_mask=prompt_mask.repeat_interleave(group, 0),
                decoder_input_ids=_decoder_ids(model, completion_ids), output_hidden_states=hidden,
                use_cache=False)  # fmt: skip
    return out.logits, out.decoder_hidden_states[-1] if hidden else None


def _causal_rows(model, prompt_ids, prompt_mask, completion_ids, hidden):
    """Every row run whole: ``prompt | completion``, the prompt left-padded."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], 1)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    keep = completion_ids.shape[1] + 1  # no logits over the (long) prompt
    out = model(input_ids=ids, attention_mask=attention, position_ids=positions,
                output_hidden_states=hidden, logits_to_keep=keep, use_cache=False)  # fmt: skip
    states = out.hidden_states[-1][:, -keep:-1] if hidden else None
    return out.logits[:, :-1], states  # position t predicts token t + 1


def grouped_layout(prompt_mask: torch.Tensor, group: int, width: int):
    """(attention mask ``(Q, 1, L, L)`` bool, position ids ``(Q, L)``, kept positions ``(G, T)``)
    of the sequences ``prompt | slot 1 | ... | slot G``, each slot ``width`` tokens.

    A prompt token sees the real prompt tokens up to itself; a slot token sees the real prompt
    tokens and its own slot up to itself; every token sees itself (padding included, so no row
    of the mask is empty). ``kept[g, t]`` is the position whose logits predict token ``t`` of
    slot ``g``: the last prompt token for ``t = 0``, else the slot's token ``t - 1``.

    >>> mask, pos, kept = grouped_layout(torch.tensor([[0, 1, 1]]), group=2, width=2)
    >>> pos.tolist()
    [[0, 0, 1, 2, 3, 2, 3]]
    >>> kept.tolist()
    [[2, 3], [2, 5]]
    >>> mask[0, 0, 6].int().tolist()  # slot 2's second token: the prompt's real tokens and slot 2
    [0, 1, 1, 0, 0, 1, 1]
    """
    questions, length = prompt_mask.shape
    total = length + group * width
    index = torch.arange(total, device=prompt_mask.device)
    segment = torch.where(index < length, -1, (index - length) // width)  # -1: the prompt
    slots_real = prompt_mask.new_ones(questions, group * width)
    real = torch.cat([prompt_mask, slots_real], 1).bool()
    causal = index[None, :] <= index[:, None]  # (query, key)
    same_slot = (segment[None, :] == segment[:, None]) & (segment[:, None] >= 0)
    sees = causal & ((segment[None, :] == -1) | same_slot)  # (L, L), before padding
    mask = (sees[None] & real[:, None, :]) | torch.eye(total, dtype=torch.bool,
                                                       device=prompt_mask.device)  # fmt: skip
    real_prompt = prompt_mask.long().sum(1, keepdim=True)
    offsets = torch.arange(width, device=prompt_mask.device).repeat(group)
    positions = torch.cat(
        [(prompt_mask.long().cumsum(1) - 1).clamp(min=0), real_prompt + offsets[None]], 1
    )
    slots = length + torch.arange(group, device=prompt_mask.device)[:, None] * width
    kept = torch.cat([torch.full_like(slots, length - 1), slots + torch.arange(width - 1)], 1)
    return mask[:, None], positions, kept


class Layout(NamedTuple):
    """What :func:`grouped_attention` needs of a ``prompt | slot 1 | ... | slot G`` sequence,
    read once a forward from :func:`grouped_layout`'s mask (not rebuilt in every layer)."""

    prompt_attention: torch.Tensor  # (Q, 1, P, P) bool: what each prompt token sees
    prompt_keys: torch.Tensor  # (Q, 1, 1, P) bool: the prompts' real tokens
    group: int
    width: int


def grouped_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, layout: Layout | None = None,
                      fallback: str = "sdpa", **kwargs):  # fmt: skip
    """Attention of a grouped sequence by parts, equal to attention over it under
    :func:`grouped_layout`'s mask, which it leaves unused: the prompt over its own real
    tokens (causal), then each slot over its prompt's real tokens and its own earlier ones,
    one softmax over both. ``query`` ``(Q, H, P + G*T, D)``; ``key``/``value`` may have fewer
    heads (grouped-query attention). A dense mask makes every query of ``Q x (P + G*T)`` meet
    every key; here a slot meets ``P + T`` (348 keys, not 684, at ``P = 300``, ``G = 8``,
    ``T = 48``: the update 1.10x there, 1.05x at refine_dev's ~170-token prompts,
    docs/performance.md). Without a ``layout`` (any other call of the model: rollouts,
    prefills) the ``fallback`` implementation runs."""
    if layout is None:
        run = ALL_ATTENTION_FUNCTIONS[fallback]
        return run(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                   **kwargs)  # fmt: skip
    if dropout or kwargs.get("softcap") or kwargs.get("sliding_window") or "s_aux" in kwargs:
        raise ValueError(
            "grouped attention runs plain softmax attention without dropout, soft-capping, "
            "sinks or sliding windows: set refine.shared_prompt=false"
        )
    prompt_attention, real, group, width = layout
    (questions, heads, _, dim), prompt = query.shape, real.shape[-1]
    scaling = dim**-0.5 if scaling is None else scaling
    repeat = heads // key.shape[1]
    key, value = repeat_kv(key, repeat), repeat_kv(value, repeat)
    prompt_out = F.scaled_dot_product_attention(
        query[:, :, :prompt], key[:, :, :prompt], value[:, :, :prompt],
        attn_mask=prompt_attention, scale=scaling,
    )  # fmt: skip
    slots = query[:, :, prompt:]  # (Q, H, G*T, D)
    on_prompt = (slots @ key[:, :, :prompt].transpose(-1, -2)) * scaling  # (Q, H, G*T, P)
    on_prompt = on_prompt.masked_fill(~real, float("-inf"))
    shape = (questions, heads, group, width, dim)
    own_keys, own_values = (x[:, :, prompt:].reshape(shape) for x in (key, value))
    on_own = (slots.reshape(shape) @ own_keys.transpose(-1, -2)) * scaling  # (Q, H, G, T, T)
    earlier = torch.ones(width, width, dtype=torch.bool, device=query.device).tril()
    on_own = on_own.masked_fill(~earlier, float("-inf"))
    scores = torch.cat([on_prompt.reshape(*shape[:-1], prompt), on_own], -1)
    weights = scores.softmax(-1, dtype=torch.float32).to(value.dtype)
    slot_out = (weights[..., :prompt].reshape(questions, heads, group * width, prompt)
                @ value[:, :, :prompt]) + (weights[..., prompt:] @ own_values).reshape(
        questions, heads, group * width, dim)  # fmt: skip
    out = torch.cat([prompt_out, slot_out], 2)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model) -> None:
    """Let ``model``'s grouped forwards (:func:`completion_logits`) run
    :func:`grouped_attention`; every other call keeps the implementation it had (the same
    function, reached through a wrapper). Idempotent; the choice is not saved with the model.
    Not for ``eager`` (its function lives in each model's module): its grouped forwards keep
    the mask."""
    config, base = model.config, model.config._attn_implementation
    if config.is_encoder_decoder or base not in ALL_ATTENTION_FUNCTIONS or "grouped" in base:
        return
    name = f"grouped_{base}"
    AttentionInterface.register(name, functools.partial(grouped_attention, fallback=base))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    model.set_attn_implementation(name)


def _causal_grouped(model, prompt_ids, prompt_mask, completion_ids, group, hidden):
    (questions, length), width = prompt_ids.shape, completion_ids.shape[1]
    mask, positions, kept = grouped_layout(prompt_mask, group, width)
    layout = Layout(mask[:, :, :length, :length].contiguous(),
                    prompt_mask.bool()[:, None, None, :], group, width)  # fmt: skip
    if model.config._attn_implementation == "eager":  # eager adds the mask to the scores
        mask = torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(model.dtype).min
        )
    ids = torch.cat([prompt_ids, completion_ids.reshape(questions, group * width)], 1)
    unique = kept.flatten().unique()  # sorted: the shared last prompt position once
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                output_hidden_states=hidden, logits_to_keep=unique, use_cache=False,
                layout=layout)  # fmt: skip
    where = torch.searchsorted(unique, kept)  # (G, T) into the kept logits

    def rows(x):  # (Q, K, D) at the kept positions -> (N, T, D), question-major
        return x[:, where].reshape(questions * group, width, x.shape[-1])

    return rows(out.logits), rows(out.hidden_states[-1][:, unique]) if hidden else None


@torch.no_grad()
def prompt_states(model, prompt_ids, prompt_mask):
    """What a frozen ``model`` computes of its prompts alone, for :func:`logits_after`: the
    encoder's states (encoder-decoder), or the key/value cache of every prompt token but the
    last (decoder-only: the last one's logits predict a completion's first token)."""
    if model.config.is_encoder_decoder:
        return model.get_encoder()(input_ids=prompt_ids, attention_mask=prompt_mask)[0]
    cache = DynamicCache(config=model.config)
    extend(model, cache, prompt_ids[:, :-1], prompt_mask[:, :-1])
    return cache


@torch.no_grad()
def logits_after(model, states, prompt_ids, prompt_mask, completion_ids):
    """:func:`completion_logits` of one completion a prompt (``N = Q``), with the prompts'
    part read from ``states`` (:func:`prompt_states` of the same model and prompts; kept as
    they are, so they serve the next call too)."""
    if model.config.is_encoder_decoder:
        out = model(encoder_outputs=BaseModelOutput(states), attention_mask=prompt_mask,
                    decoder_input_ids=_decoder_ids(model, completion_ids),
                    use_cache=False)  # fmt: skip
        return out.logits
    ids = torch.cat([prompt_ids[:, -1:], completion_ids[:, :-1]], 1)
    mask = torch.cat([prompt_mask, torch.ones_like(completion_ids[:, :-1])], 1)
    return extend(model, copy.deepcopy(states), ids, mask, logits=True).logits
