"""The RL algorithms of the refine stage on one interface, and the rollout batch they read.

Each algorithm turns a batch's sequence scores into advantages (``advantages``) and a
minibatch's log-probs into a loss (``loss``); ``value_head`` says whether the policy needs a
critic, ``group_size`` how many samples of each question a step draws, ``critic_warmup_steps``
how many steps update the critic alone. The math lives in :mod:`lmcot.rl`; the loop that
samples, scores and updates in :mod:`lmcot.refine`.
"""

from dataclasses import dataclass

import torch

from lmcot import rl


@dataclass
class Batch:
    """One rollout batch as tensors: the prompts one row per question ``(Q, P)``, the rest one
    row per sample, question-major (``N = Q * group_size``); the per-token ones ``(N, T)``."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    mask: torch.Tensor  # tokens that carry loss: chosen by the policy, sample has a reward
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    advantages: torch.Tensor
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def group_size(self) -> int:
        return len(self.completion_ids) // len(self.prompt_ids)

    def sample_rows(self, questions: torch.Tensor) -> torch.Tensor:
        """The sample rows of ``questions``, question-major."""
        return (questions[:, None] * self.group_size + torch.arange(self.group_size)).flatten()

    def questions(self, index: torch.Tensor) -> "Batch":
        """The questions ``index`` with all their samples (a group is never split)."""
        rows = self.sample_rows(index)
        return Batch(**{k: None if v is None else v[index if k.startswith("prompt") else rows]
                        for k, v in vars(self).items()})  # fmt: skip


class PPO:
    """PPO as in the paper (Ziegler et al. 2019 style): KL penalty per token in the reward,
    the sequence reward on the last token, GAE over a value head, whitened advantages.

    The KL in the reward shapes the return, and whitening then rescales it to unit variance,
    so past the point where it dominates the score the coefficient stops mattering: it is a
    noisy score-function push towards the reference, not an anchor (coef 1000 left 13 of the
    14 greedy tokens that drifted without it, docs/refine.md). ``kl_in_reward=False`` puts
    ``coef * k3`` per token in the loss instead (as GRPO and e.g. verl's ``use_kl_loss``): its
    pathwise gradient pulls every sampled token's log-prob back and grows with the
    coefficient, which holds the policy near the reference (within about one Adam step).

    The critic is a linear head on the policy's last hidden state, detached: it reads the
    policy's features but never trains them, so the value loss cannot move the policy. A
    critic that starts at zero makes GAE's advantage ``~ lam^(T-1-t) * R``, whose whitened
    sign is set by the token's position, not by the reward: ``critic_warmup_steps`` first fit
    the critic alone on rollouts of the unchanged policy, at its own ``value_lr``.

    Args:
        kl: KL controller (``lmcot.rl.AdaptiveKLController`` or ``FixedKLController``).
        epochs: optimisation passes over each rollout batch.
        minibatch_size: samples per optimiser step.
        clip: ratio clip of the surrogate; value_clip: clip of the value update (None: none).
        vf_coef: weight of the value loss.
        gamma, lam: GAE discount and lambda over rationale tokens.
        kl_in_reward: the paper's per-token ``-coef * k1`` in the reward (True), or
            ``coef * k3`` per token in the loss (False).
        critic_warmup_steps: steps at the start that update the critic only.
        value_lr: the critic's learning rate (None: the policy's).
    """

    value_head = True
    group_size = 1

    def __init__(self, kl, epochs=2, minibatch_size=4, clip=0.2, value_clip=0.2, vf_coef=0.1,
                 gamma=1.0, lam=0.95, kl_in_reward=True, critic_warmup_steps=0,
                 value_lr=None):  # fmt: skip
        self.kl, self.epochs, self.minibatch_size = kl, epochs, minibatch_size
        self.clip, self.value_clip, self.vf_coef = clip, value_clip, vf_coef
        self.gamma, self.lam, self.kl_in_reward = gamma, lam, kl_in_reward
        self.critic_warmup_steps, self.value_lr = critic_warmup_steps, value_lr

    def advantages(self, scores, logp, ref_logp, values, mask):
        """(per-token advantages, returns) from sequence scores ``(N,)``."""
        rewards = torch.zeros_like(logp)
        if self.kl_in_reward and self.kl.value > 0:  # beta = 0: no reference log-probs
            rewards = -self.kl.value * rl.kl_estimate(logp, ref_logp, "k1") * mask
        last = (mask.sum(1).long() - 1).clamp(min=0)
        rewards[torch.arange(len(scores)), last] += scores
        advantages, returns = rl.gae(rewards, values, mask, self.gamma, self.lam)
        return rl.masked_whiten(advantages, mask), returns

    def loss(self, logp, values, batch: Batch, critic_only: bool = False):
        vloss = rl.value_loss(values, batch.old_values, batch.returns, batch.mask, self.value_clip)
        if critic_only:
            return self.vf_coef * vloss, {"value_loss": vloss}
        policy, clip_ratio = rl.clipped_surrogate(
            logp, batch.old_logp, batch.advantages, batch.mask, self.clip
        )
        if not self.kl_in_reward and self.kl.value > 0:
            policy = policy + self.kl.value * kl_loss(logp, batch)
        return policy + self.vf_coef * vloss, {"clip_ratio": clip_ratio, "value_loss": vloss}


def kl_loss(logp: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The KL loss term: k3 (unbiased, never negative) per chosen token, averaged."""
    return rl.masked_mean(rl.kl_estimate(logp, batch.ref_logp, "k3"), batch.mask)


class GRPO:
    """Group-relative policy optimisation (Shao et al. 2024): ``group_size`` rationales per
    question, each advantage its reward against the group's mean (and std); no value head.

    Args:
        kl: KL controller; its value is beta.
        group_size: samples per question (one ``generate`` with ``n=group_size``).
        epochs, minibatch_size, clip: as in :class:`PPO`.
        scale_rewards: divide by the group std (False: only centre, as Dr. GRPO).
        kl_in_reward: subtract beta * KL (k1, summed over tokens) from each reward instead of
            adding beta * k3 per token to the loss (GRPO's default).
    """

    value_head = False
    critic_warmup_steps = 0

    def __init__(self, kl, group_size=4, epochs=1, minibatch_size=8, clip=0.2,
                 scale_rewards=True, kl_in_reward=False):  # fmt: skip
        if group_size < 2:
            raise ValueError(f"refine.algorithm.group_size must be >= 2 for GRPO: {group_size}")
        self.kl, self.group_size, self.epochs = kl, group_size, epochs
        self.minibatch_size, self.clip = minibatch_size, clip
        self.scale_rewards, self.kl_in_reward = scale_rewards, kl_in_reward

    def advantages(self, scores, logp, ref_logp, values, mask):
        if self.kl_in_reward and self.kl.value > 0:
            scores = scores - self.kl.value * (rl.kl_estimate(logp, ref_logp, "k1") * mask).sum(1)
        valid = mask.sum(1) > 0
        return self.group_advantages(scores, valid)[:, None] * mask, None

    def group_advantages(self, scores, valid):
        return rl.group_advantages(scores, self.group_size, valid, self.scale_rewards)

    def loss(self, logp, values, batch: Batch, critic_only: bool = False):
        policy, clip_ratio = rl.clipped_surrogate(
            logp, batch.old_logp, batch.advantages, batch.mask, self.clip
        )
        if not self.kl_in_reward and self.kl.value > 0:
            policy = policy + self.kl.value * kl_loss(logp, batch)
        return policy, {"clip_ratio": clip_ratio}


class RLOO(GRPO):
    """REINFORCE leave-one-out (Ahmadian et al. 2024), with GRPO's clipped updates: each
    sample's advantage is its reward minus the mean of the *other* samples of its question
    (unbiased, no critic, no division by a group std that explodes when a group agrees).

    Args: as :class:`GRPO`; ``scale_rewards`` must stay False (the baseline is not scaled).
    """

    def __init__(self, kl, group_size=4, epochs=1, minibatch_size=8, clip=0.2,
                 scale_rewards=False, kl_in_reward=False):  # fmt: skip
        if scale_rewards:
            raise ValueError("refine.algorithm.scale_rewards must be false for RLOO")
        super().__init__(kl, group_size, epochs, minibatch_size, clip, False, kl_in_reward)

    def group_advantages(self, scores, valid):
        return rl.leave_one_out_advantages(scores, self.group_size, valid)
