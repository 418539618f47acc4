"""The in-place cache: the dynamic cache's logits to the bit, one copy per ROOM tokens."""

import copy

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from lmcot.lm import kvcache
from lmcot.lm.kvcache import GrowingLayer, growing_cache
from lmcot.lm.prefix import extend


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def decode(model, cache, ids, mask, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill ``ids`` but the last token, then ``steps`` greedy steps: (logits, tokens)."""
    with torch.no_grad():
        extend(model, cache, ids[:, :-1], mask[:, :-1])
        cache.batch_repeat_interleave(2)  # as CausalLM._sample does for its n samples
        ids, mask = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
        last, logits = ids[:, -1:], []
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(last)], 1)
            out = extend(model, cache, last, mask, logits=True)
            logits.append(out.logits[:, -1])
            last = out.logits[:, -1:].argmax(-1)
    return torch.stack(logits, 1), cache


def test_logits_equal_the_dynamic_cache_to_the_bit_across_a_full_buffer(model):
    """Left-padded prompts of different lengths, repeated for samples, decoded past a full
    buffer (room 4: several regrowths): every step's logits equal the dynamic cache's."""
    ids = torch.randint(0, 97, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[2, :1] = 0
    dynamic, _ = decode(model, DynamicCache(config=model.config), ids, mask, steps=11)
    growing, cache = decode(model, growing_cache(model.config, room=4), ids, mask, steps=11)
    assert torch.equal(growing, dynamic)
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    assert cache.get_seq_length() == 8 + 11
    assert cache.layers[0].buffers[0].shape[-2] >= 19


def test_a_decoding_step_writes_in_place_until_the_room_is_used(model):
    cache = growing_cache(model.config)
    layer = cache.layers[0]
    k = torch.randn(2, 2, 5, 8)
    layer.update(k, k.clone())
    buffer = layer.buffers[0]
    assert buffer.shape[-2] == 5 + kvcache.ROOM and not layer.keys.is_contiguous()
    for _ in range(kvcache.ROOM):
        step = torch.randn(2, 2, 1, 8)
        keys, _ = layer.update(step, step)
        assert layer.buffers[0] is buffer and torch.equal(keys[:, :, -1:], step)
    assert torch.equal(layer.keys[:, :, :5], k)
    layer.update(step, step)  # full: a new buffer, the old positions copied
    assert layer.buffers[0] is not buffer and torch.equal(layer.keys[:, :, :5], k)
    assert layer.get_seq_length() == 5 + kvcache.ROOM + 1


def test_selecting_rows_crop_and_a_deep_copy_keep_the_right_positions(model):
    layer = growing_cache(model.config).layers[0]
    k = torch.arange(3 * 2 * 4 * 8, dtype=torch.float).reshape(3, 2, 4, 8)
    layer.update(k, k)
    copied = copy.deepcopy(layer)
    layer.batch_select_indices(torch.tensor([2, 0]))  # compact copies: the next update regrows
    step = torch.full((2, 2, 1, 8), -1.0)
    keys, values = layer.update(step, step)
    assert torch.equal(keys, torch.cat([k[[2, 0]], step], 2)) and torch.equal(values, keys)
    layer.crop(-2)  # a view of the same buffer: the next token lands after the kept ones
    keys, _ = layer.update(step, step)
    assert torch.equal(keys, torch.cat([k[[2, 0], :, :3], step], 2))
    step3 = torch.full((3, 2, 1, 8), -2.0)
    keys, _ = copied.update(step3, step3)  # the copy is independent of the original
    assert torch.equal(keys, torch.cat([k, step3], 2))
