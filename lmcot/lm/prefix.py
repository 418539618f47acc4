"""Prefix reuse for decoder-only models: a token prefix shared by prompts is prefilled once.

Every reader prompt starts with the same instruction and few-shot exemplars (~70% of its
tokens), and the k self-consistency prompts of one question share all but the rationale. A
causal model's key/value cache of a prefix does not depend on what follows it, so it is
computed once (batch 1) and repeated along the batch; only the tokens that differ are run.

Why hand-written: transformers' ``generate`` accepts a prefilled ``past_key_values`` but does
not look for prefixes shared across a batch, and the engines that do (vLLM's prefix caching)
do not run on our CPU target. Prompts are tokenised whole, once; the shared prefix is the
longest common prefix of those token ids, so it always ends on a token boundary of every
prompt. Two levels are shared: the prefix common to every prompt of a call (the exemplars),
and within a batch the prefix a group of neighbouring prompts shares beyond it (one question's
context; :func:`shared_groups`). Rows are laid out as
``common prefix | padding | group part | padding | own suffix``; the attention mask hides the
padding and position ids follow the mask, so every real token sees exactly the positions and
context it has in the plain left-padded path.
"""

import copy

import torch


def common_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest token prefix all ``rows`` share.

    >>> common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    shortest = min(rows, key=len)
    for i, token in enumerate(shortest):
        if any(row[i] != token for row in rows):
            return i
    return len(shortest)


def shared_groups(rows: list[list[int]], caps: list[int], common: int) -> list[tuple[list, int]]:
    """Split neighbouring ``rows`` into groups that share a prefix beyond the ``common`` one.

    Returns (row positions, shared length) per group, the length at most each member's cap (a
    lone row's is its cap). A row joins the group before it while the group keeps at least
    half the prefix it shared without the row: the k self-consistency prompts of one question
    share its context and question, prompts of different questions a few tokens at most.

    >>> shared_groups([[1, 2, 3, 4], [1, 2, 3, 5], [1, 7, 8, 9]], [3, 3, 3], common=1)
    [([0, 1], 3), ([2], 3)]
    """
    groups: list[tuple[list, int]] = []
    for j, row in enumerate(rows):
        if groups:
            members, length = groups[-1]
            joined = min(common_prefix_length([rows[members[0]], row]), length, caps[j])
            if joined > common and joined - common >= (length - common) / 2:
                groups[-1] = (members + [j], joined)
                continue
        groups.append(([j], caps[j]))
    return groups


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only unmasked tokens (padding gets 0: it is never attended)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def repeated(cache, times: int):
    """A copy of a batch-1 ``cache`` repeated ``times`` along the batch; the original is kept."""
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(times)
    return cache


def extend(model, cache, ids: torch.Tensor, mask: torch.Tensor, logits: bool = False):
    """Run ``ids`` (B, T) after what ``cache`` holds; ``mask`` covers cache and ids. Returns
    the model output (its cache is ``cache``, now longer by T), with every position's logits
    when ``logits``. Without, the decoder alone runs (a prefill wants the cache, not logits),
    so the vocabulary projection is skipped: asked for the last position alone, the projection
    of a PEFT-wrapped student took a slow path on the sliced hidden state that held 0.85 GB
    more at its peak than the plain model's (docs/performance.md, memory)."""
    past = mask.shape[1] - ids.shape[1]
    inputs = {"input_ids": ids, "attention_mask": mask, "cache": cache, "use_cache": True,
              "position_ids": positions(mask)[:, past:]}  # fmt: skip
    if logits:
        return model(**inputs, logits_to_keep=0)
    return model.get_decoder()(**inputs)  # a PEFT model's adapters live inside its decoder
