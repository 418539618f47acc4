"""The RL step's math against small hand-computed cases."""

import math

import pytest
import torch

from lmcot import rl

T = torch.tensor


def test_masked_mean_and_whiten_ignore_masked_positions():
    x, mask = T([[1.0, 3.0, 100.0]]), T([[1.0, 1.0, 0.0]])
    assert rl.masked_mean(x, mask).item() == 2.0
    assert rl.masked_mean(x, mask, dim=1).tolist() == [2.0]
    w = rl.masked_whiten(x, mask)  # mean 2, var 1
    assert torch.allclose(w, T([[-1.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(rl.masked_whiten(x, mask, shift_mean=False), T([[1.0, 3.0, 0.0]]),
                          atol=1e-6)  # fmt: skip
    assert rl.masked_mean(x, torch.zeros_like(x)).item() == 0.0  # nothing counted: 0, no NaN


def test_gae_by_hand():
    rewards, values = T([[0.0, 0.0, 1.0, 9.0]]), T([[0.5, 0.2, 0.4, 9.0]])
    mask = T([[1.0, 1.0, 1.0, 0.0]])  # the last position is padding
    adv, ret = rl.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 1.0 - 0.4  # the episode ends at t=2: no next value
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2, a1 = d2, d1 + 0.45 * d2
    a0 = d0 + 0.45 * a1
    assert torch.allclose(adv, T([[a0, a1, a2, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, T([[a0 + 0.5, a1 + 0.2, a2 + 0.4, 0.0]]), atol=1e-6)


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards, values, mask = T([[1.0, 2.0, 3.0]]), T([[0.5, 0.5, 0.5]]), torch.ones(1, 3)
    adv, _ = rl.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv, T([[5.5, 4.5, 2.5]]))


def test_clipped_surrogate_by_hand():
    old = torch.zeros(1, 3)
    logp = torch.log(T([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = T([[1.0, 1.0, -1.0]])
    loss, clip_fraction = rl.clipped_surrogate(logp, old, adv, torch.ones(1, 3), clip=0.2)
    # per token max(-A r, -A clip(r)): max(-1.5, -1.2) = -1.2 (clipped); max(-0.5, -0.8) = -0.5;
    # max(1.1, 1.1) = 1.1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert clip_fraction.item() == pytest.approx(1 / 3)
    seq_loss, _ = rl.clipped_surrogate(logp, old, T([1.0]), torch.ones(1, 3))  # per sequence
    assert seq_loss.item() == pytest.approx((-1.2 - 0.5 - 1.1) / 3)


def test_value_loss_by_hand():
    values, old, returns = T([[1.0, 0.0]]), T([[0.0, 0.0]]), T([[0.0, 1.0]])
    loss = rl.value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: max((1-0)^2, (0.2-0)^2) = 1; token 1: max(1, 1) = 1
    assert loss.item() == pytest.approx(0.5)


def test_kl_estimators_by_hand():
    logp, ref = T([math.log(0.5)]), T([math.log(0.25)])  # log r = log 0.5
    lr = math.log(0.5)
    assert rl.kl_estimate(logp, ref, "k1").item() == pytest.approx(-lr)
    assert rl.kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * lr**2)
    assert rl.kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - 1 - lr)
    assert rl.kl_estimate(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        rl.kl_estimate(logp, ref, "k4")


def test_group_advantages_by_hand():
    rewards = T([1.0, 3.0, 2.0, 2.0])  # two groups of 2
    adv = rl.group_advantages(rewards, 2, eps=1e-9)  # a flat group: 0, not 0/0
    std = math.sqrt(2.0)  # unbiased std of (1, 3)
    assert torch.allclose(adv, T([-1 / std, 1 / std, 0.0, 0.0]))
    assert torch.allclose(rl.group_advantages(rewards, 2, scale=False), T([-1.0, 1.0, 0.0, 0.0]))


def test_group_advantages_leave_out_invalid_samples():
    rewards = T([1.0, 3.0, float("nan"), 5.0, 7.0, 0.0])  # groups of 3; sample 2 has no reward
    valid = T([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    adv = rl.group_advantages(rewards, 3, valid=valid, scale=False)
    assert torch.isfinite(adv).all()
    assert torch.allclose(adv, T([-1.0, 1.0, 0.0, 1.0, 3.0, -4.0]))
    with pytest.raises(ValueError, match="groups of 4"):
        rl.group_advantages(rewards, 4)


def test_entropy_of_uniform_and_peaked_logits():
    logits = T([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rl.entropy_from_logits(logits), T([math.log(4), 0.0]), atol=1e-5)


def test_adaptive_kl_controller_moves_towards_target_and_round_trips():
    ctl = rl.AdaptiveKLController(coef=0.1, target=1.0, horizon=10)
    ctl.update(kl=2.0, n_steps=1)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(kl=0.9, n_steps=1)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99)
    ctl.update(kl=float("nan"), n_steps=1)
    other = rl.AdaptiveKLController(coef=5.0, target=1.0, horizon=10)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value
    fixed = rl.FixedKLController(0.3)
    fixed.update(kl=100.0, n_steps=1)
    assert fixed.value == 0.3


def test_selective_logprobs_equal_the_log_softmax_at_the_ids():
    logits, ids = torch.randn(2, 3, 11), torch.randint(0, 11, (2, 3))
    expected = logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(rl.selective_logprobs(logits, ids), expected, atol=1e-6)


def test_leave_one_out_advantages_by_hand():
    rewards = T([1.0, 2.0, 6.0, 0.0, 4.0, 8.0])
    adv = rl.leave_one_out_advantages(rewards, 3)
    assert torch.allclose(adv, T([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 6.0, 4 - 4.0, 8 - 2.0]))
    valid = T([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])  # the second group has one valid sample
    assert torch.allclose(rl.leave_one_out_advantages(rewards, 3, valid),
                          T([1 - 6.0, 0.0, 6 - 1.0, 0.0, 0.0, 0.0]))  # fmt: skip


def test_explained_variance_and_quarter_means():
    returns, mask = T([[1.0, 2.0, 3.0, 4.0]]), torch.ones(1, 4)
    assert rl.explained_variance(returns, returns, mask) == 1.0
    assert rl.explained_variance(torch.zeros(1, 4), returns, mask) == pytest.approx(0.0)
    assert rl.explained_variance(-returns, returns, mask) < 0
    assert rl.quarter_means(returns, mask) == (1.0, 4.0)
    mask = T([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    first, last = rl.quarter_means(T([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 99.0, 99.0]]), mask)
    assert (first, last) == (5.5, 12.0)  # (1 + 10) / 2, (4 + 20) / 2


def test_value_loss_without_a_clip_is_the_plain_squared_error():
    values, old, returns = T([[3.0]]), T([[0.0]]), T([[5.0]])
    assert rl.value_loss(values, old, returns, torch.ones(1, 1), clip=None).item() == 2.0
    assert rl.value_loss(values, old, returns, torch.ones(1, 1), clip=0.2).item() == pytest.approx(
        0.5 * 4.8**2
    )


def test_a_critic_that_predicts_the_return_leaves_no_advantage():
    from lmcot.algorithms import PPO

    ppo = PPO(rl.FixedKLController(0.0), gamma=1.0, lam=0.95)
    scores, mask = T([2.0, 5.0]), T([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    logp = torch.zeros(2, 4)
    values = scores[:, None] * mask  # the return of every token: the sequence reward
    advantages, returns = ppo.advantages(scores, logp, logp, values, mask)
    assert torch.allclose(advantages, torch.zeros(2, 4), atol=1e-3)
    assert torch.allclose(returns, values)
    # a critic at zero instead: the advantage grows towards the end, whatever the reward
    zero, _ = ppo.advantages(scores, logp, logp, torch.zeros(2, 4), mask)
    assert (zero[:, 0] < zero[:, 2]).all()
