"""A key/value cache that grows in place: a decoding step appends its token without copying.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``, which
copies every layer's whole cache at every step: SmolLM2-135M's cache is 46 KB a position a row
in fp32, so 64 rows of ~210 positions copy 0.6 GB per token, a third of such a decoding step
(docs/performance.md: 508 -> 344 ms a step here). Its ``StaticCache`` preallocates the whole
length but then attends over all of it, padding included, which costs more on a CPU than the
copy saves and changes the tokens.

Here each layer writes into a buffer with room for :data:`ROOM` more positions and gives
attention a view of the filled part: the same keys and values over the same length as the
dynamic cache, so the same logits. A buffer is copied only when it is full, or when something
replaced the layer's tensors (``batch_repeat_interleave``, ``batch_select_indices``: they make
compact copies, as in the dynamic cache), so a decoding call of up to ``ROOM`` tokens copies
each layer once instead of once per token.

Why hand-written: transformers has no cache between these two (its layers are either grown by
``cat`` or preallocated to a fixed length), and the engines that page their caches (vLLM) do
not run on our CPU target.
"""

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

ROOM = 64  # positions a buffer keeps free: one copy per 64 decoded tokens, for at most 64
# positions a row more than the dynamic cache holds (what it reaches after 64 tokens anyway)


class GrowingLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose ``keys``/``values`` are views of buffers with room."""

    def __init__(self, room: int = ROOM):
        super().__init__()
        self.room = room
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def holds_views(self) -> bool:
        """Whether ``keys``/``values`` are still the first positions of the buffers."""
        if self.buffers is None:
            return False
        pairs = zip((self.keys, self.values), self.buffers)
        return all(t.data_ptr() == b.data_ptr() and t.shape[:2] == b.shape[:2]
                   and t.stride() == b.stride() for t, b in pairs)  # fmt: skip

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        total = length + key_states.shape[-2]
        if not self.holds_views() or total > self.buffers[0].shape[-2]:
            self.buffers = tuple(
                self.grown(old, new, length, total + self.room)
                for old, new in ((self.keys, key_states), (self.values, value_states))
            )  # fmt: skip
        for buffer, new in zip(self.buffers, (key_states, value_states)):
            buffer[:, :, length:total].copy_(new)
        self.keys, self.values = (b[:, :, :total] for b in self.buffers)
        return self.keys, self.values

    @staticmethod
    def grown(old: torch.Tensor, new: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
        """A buffer of ``capacity`` positions shaped like ``new``; its first ``length`` from
        ``old``."""
        batch, heads, _, dim = new.shape
        buffer = new.new_empty(batch, heads, capacity, dim)
        if length:
            buffer[:, :, :length].copy_(old)
        return buffer

    def reset(self) -> None:
        self.buffers = None
        super().reset()


def growing_cache(config, room: int = ROOM) -> DynamicCache:
    """A ``DynamicCache`` for a model of ``config`` whose full-attention layers grow in place
    (sliding-window layers, which drop old positions, stay as transformers makes them)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(room) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]  # fmt: skip
    return cache
