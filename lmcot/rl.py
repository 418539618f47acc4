"""The math of one RL step, as small pure functions on tensors (unit-tested by hand).

Shapes: per-token tensors are ``(batch, tokens)`` with a 0/1 ``mask`` of the tokens that count
(the completion up to and including its end token). We write these ourselves instead of calling
TRL because TRL 1.x has no PPO for encoder-decoders and its GRPO is decoder-only; the formulas
follow TRL and the papers named in each docstring, so logged numbers mean the same.
"""

import math
import statistics

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 where nothing is masked in)."""
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``x`` scaled to unit variance (and zero mean) over the masked positions; 0 elsewhere."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over token-level rewards.

    The episode ends after the last masked token (its next value is 0). Returns
    ``(advantages, returns)`` with ``returns = advantages + values``, both 0 outside ``mask``.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_mask = mask[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        running = delta + gamma * lam * running * next_mask
        advantages[:, t] = running * mask[:, t]
    return advantages, (advantages + values) * mask


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped policy loss (Schulman et al. 2017): ``(loss, clip fraction)``.

    ``advantages`` is per token, or per sequence ``(batch,)`` (broadcast over tokens).
    The clip fraction is the share of tokens whose clipped term was the one used.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
) -> torch.Tensor:
    """Clipped value loss: ``0.5 * max((v - R)^2, (clip(v, v_old +- clip) - R)^2)``; with
    ``clip=None`` the plain ``0.5 * (v - R)^2`` (a clip in reward units lets a critic move only
    ``clip`` a rollout towards returns of another scale)."""
    if clip is None:
        return 0.5 * masked_mean((values - returns) ** 2, mask)
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    worst = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(worst, mask)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of sampled tokens.

    Schulman's estimators with ``log r = ref_logp - logp``: ``k1 = -log r`` (unbiased, can be
    negative), ``k2 = (log r)^2 / 2`` (low variance, biased), ``k3 = r - 1 - log r``
    (unbiased, never negative: GRPO's loss term).
    """
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.exp(log_ratio) - 1 - log_ratio
    raise ValueError(f"KL estimator must be k1, k2 or k3, got {kind!r}")


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    valid: torch.Tensor | None = None,
    scale: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO's advantages (Shao et al. 2024): ``(r - group mean) / (group std + eps)``.

    ``rewards`` holds ``group_size`` consecutive samples per prompt. Samples with
    ``valid == 0`` (no reward) are left out of their group's statistics and get advantage 0.
    ``scale=False`` only centres (Dr. GRPO, Liu et al. 2025). The std is the unbiased one, as
    TRL's.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    valid = torch.ones_like(rewards) if valid is None else valid.to(rewards.dtype)
    r, v = rewards.view(-1, group_size), valid.view(-1, group_size)
    r = torch.where(v > 0, r, torch.zeros_like(r))
    count = v.sum(1, keepdim=True)
    mean = (r * v).sum(1, keepdim=True) / count.clamp(min=1)
    advantages = (r - mean) * v
    if scale:
        var = ((r - mean) ** 2 * v).sum(1, keepdim=True) / (count - 1).clamp(min=1)
        advantages = advantages / (var.sqrt() + eps)
    return advantages.view(-1)


def leave_one_out_advantages(
    rewards: torch.Tensor, group_size: int, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """RLOO's advantages (Ahmadian et al. 2024): each reward minus the mean of the *other*
    valid samples of its group, an unbiased baseline that needs no critic. Invalid samples,
    and a group's only valid sample, get 0.

    >>> leave_one_out_advantages(torch.tensor([1.0, 2.0, 6.0, 5.0]), 2).tolist()
    [-1.0, 1.0, 1.0, -1.0]
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    valid = torch.ones_like(rewards) if valid is None else valid.to(rewards.dtype)
    r, v = (rewards * valid).view(-1, group_size), valid.view(-1, group_size)
    others = (v.sum(1, keepdim=True) - v).clamp(min=1)
    baseline = (r.sum(1, keepdim=True) - r) / others
    alone = v.sum(1, keepdim=True) < 2
    return torch.where(alone, torch.zeros_like(r), (r - baseline) * v).view(-1)


def group_stds(values: list[float | None], group_size: int) -> list[float]:
    """Population std of each group's present values (``group_size`` consecutive samples per
    question; ``None`` left out, groups with fewer than 2 present skipped): the spread a
    group-relative advantage can learn from, which the batch's std mixes with the questions'.

    >>> group_stds([1.0, 3.0, 2.0, 2.0, 5.0, None], 2)
    [1.0, 0.0]
    """
    if len(values) % group_size:
        raise ValueError(f"{len(values)} values do not split into groups of {group_size}")
    groups = (values[i : i + group_size] for i in range(0, len(values), group_size))
    present = ([v for v in g if v is not None] for g in groups)
    return [statistics.pstdev(p) for p in present if len(p) > 1]


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(returns - values) / Var(returns)`` over the masked tokens: 1 for a critic that
    predicts the returns, 0 for one that predicts their mean, below 0 for a worse one (nan when
    the returns do not vary).

    >>> r, m = torch.tensor([[1.0, 3.0]]), torch.ones(1, 2)
    >>> explained_variance(r, r, m), explained_variance(torch.full_like(r, 2.0), r, m)
    (1.0, 0.0)
    """
    var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    error = returns - values
    residual = masked_mean((error - masked_mean(error, mask)) ** 2, mask)
    return float(1 - residual / var) if var > 0 else float("nan")


def quarter_means(x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Mean of ``x`` over the first and over the last quarter of each row's masked tokens
    (at least one token each): an advantage that depends on position shows here.

    >>> quarter_means(torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]]), torch.tensor([[1.0] * 4 + [0.0]]))
    (1.0, 4.0)
    """
    lengths = mask.sum(1, keepdim=True)
    position = mask.cumsum(1) - 1  # 0-based index among the row's masked tokens
    span = (lengths / 4).ceil().clamp(min=1)
    first = mask * (position < span)
    last = mask * (position >= lengths - span)
    return masked_mean(x, first).item(), masked_mean(x, last).item()


def selective_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``ids`` (``(..., vocab), (...) -> (...)``) without building
    the full log-softmax: one gather and one logsumexp over a large vocabulary."""
    picked = logits.gather(-1, ids[..., None]).squeeze(-1)
    return picked - logits.logsumexp(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: ``(..., vocab) -> (...)``."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


class FixedKLController:
    """A constant KL coefficient (with the adaptive one's interface)."""

    def __init__(self, coef: float):
        self.value = float(coef)

    def update(self, kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. (2019): move the coefficient so the observed KL approaches ``target``.

    ``value *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``.
    """

    def __init__(self, coef: float, target: float, horizon: int):
        super().__init__(coef)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"KL target and horizon must be > 0, got {target}, {horizon}")
        self.target, self.horizon = float(target), int(horizon)

    def update(self, kl: float, n_steps: int) -> None:
        if not math.isfinite(kl):
            return
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
