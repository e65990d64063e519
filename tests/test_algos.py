"""Hand-computed checks of critique_rl.algos; the arithmetic is in the comments."""

import math

import pytest
import torch

from critique_rl.algos import (
    aggregate,
    entropy_stats,
    group_advantages,
    logp_advantage_cov,
    policy_loss,
    shaping_weight,
    token_logprobs_and_entropy,
)


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32),
                               torch.as_tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


def ratio_inputs(ratios, logp=None):
    """(logp leaf with grad, old_logp) so that exp(logp - old_logp) = ratios; logp defaults to ln 0.5."""
    ratios = torch.tensor(ratios)
    logp = torch.full_like(ratios, math.log(0.5)) if logp is None else torch.tensor(logp)
    return logp.clone().requires_grad_(), logp - ratios.log()


def run(logp, old_logp, advantages, is_refinement=None, mask=None, **kwargs):
    """policy_loss with dapo over all tokens of this micro-batch unless overridden; returns loss, grad, metrics."""
    kwargs.setdefault("loss_type", "dapo")
    kwargs.setdefault("num_sequences", logp.shape[0])
    kwargs.setdefault("num_tokens", logp.numel())
    kwargs.setdefault("max_completion_length", logp.shape[1])
    mask = torch.ones_like(old_logp) if mask is None else mask
    is_refinement = torch.zeros(logp.shape[0], dtype=torch.bool) if is_refinement is None else is_refinement
    loss, metrics = policy_loss(logp, old_logp, torch.tensor(advantages), mask, is_refinement, **kwargs)
    loss.backward()
    return loss.detach(), logp.grad, metrics


# ---------------------------------------------------------------- log-probs and entropy

def test_uniform_logits_give_log_v():
    logp, entropy = token_logprobs_and_entropy(torch.zeros(2, 3, 4), torch.tensor([[0, 1, 2], [3, 3, 0]]))
    close(logp, torch.full((2, 3), -math.log(4)))  # -1.386294
    close(entropy, torch.full((2, 3), math.log(4)))


def test_peaked_logits_and_temperature():
    logp, entropy = token_logprobs_and_entropy(torch.tensor([[[20.0, 0, 0, 0]]]), torch.tensor([[1]]))
    # p(1) = e^0 / (e^20 + 3) -> logp ~ -20; entropy ~ 20 * 3 e^-20 ~ 1e-7
    close(logp, [[-20.0]], tol=1e-4)
    assert entropy.item() < 1e-6
    # logits [2 ln 3, 0, 0] / T=2 = [ln 3, 0, 0] -> p = [0.6, 0.2, 0.2]
    logp, entropy = token_logprobs_and_entropy(torch.tensor([[[2 * math.log(3), 0, 0]]]), torch.tensor([[0]]), 2.0)
    close(logp, [[math.log(0.6)]])
    # H = 0.6 ln(5/3) + 0.4 ln 5 = 0.306495 + 0.643775 = 0.950271
    close(entropy, [[0.950271]])


# ---------------------------------------------------------------- advantages

def test_seven_failures_one_correct_refinement():
    rewards = torch.tensor([0.0] * 7 + [1.0])
    group = torch.zeros(8, dtype=torch.long)
    # mean 1/8 = 0.125 -> 1 - 0.125 = 0.875, 0 - 0.125 = -0.125
    close(group_advantages(rewards, group), [-0.125] * 7 + [0.875])
    # population var = (7 * 0.125^2 + 0.875^2) / 8 = 0.109375, std = 0.330719;
    # 0.875 / 0.330819 = 2.644952, -0.125 / 0.330819 = -0.377850
    close(group_advantages(rewards, group, "group"), [-0.377850] * 7 + [2.644952])


def test_unequal_interleaved_groups():
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 1.0])
    group = torch.tensor([0, 1, 0, 1, 1, 2])
    # group 0 {1, 0.5}: mean 0.75; group 1 {0, 1, 0}: mean 1/3; group 2 {1}: mean 1
    close(group_advantages(rewards, group), [0.25, -1 / 3, -0.25, 2 / 3, -1 / 3, 0.0])
    # std0 = 0.25 -> 0.25 / 0.2501 = 0.999600; std1 = sqrt((1/9 + 4/9 + 1/9) / 3) = sqrt(2/9) = 0.471405
    # -> (1/3) / 0.471505 = 0.706957, (2/3) / 0.471505 = 1.413914; singleton: 0 / (0 + eps) = 0
    close(group_advantages(rewards, group, "group"), [0.999600, -0.706957, -0.999600, 1.413914, -0.706957, 0.0])


def test_constant_group_scaled_is_zero_not_nan():
    close(group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long), "group"), [0.0] * 4)


def test_unbiased_group_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    group = torch.tensor([0, 0, 0, 0, 1])
    # group 0: mean 0.25, centred [0.75, -0.25, -0.25, -0.25], sum of squares 0.5625 + 3 * 0.0625 = 0.75
    # population: var 0.75 / 4 = 0.1875, std 0.433013 -> 0.75 / 0.433113 = 1.731651, -0.25 / 0.433113 = -0.577217
    close(group_advantages(rewards, group, "group"), [1.731651, -0.577217, -0.577217, -0.577217, 0.0])
    # unbiased: var 0.75 / 3 = 0.25, std 0.5 -> 0.75 / 0.5001 = 1.499700, -0.25 / 0.5001 = -0.499900;
    # the group of one (group 1) divides 0 by n - 1 taken as 1: A = 0, not NaN
    close(group_advantages(rewards, group, "group", unbiased=True), [1.499700, -0.499900, -0.499900, -0.499900, 0.0])
    # without scaling the std is not used
    close(group_advantages(rewards, group, unbiased=True), [0.75, -0.25, -0.25, -0.25, 0.0])


# ---------------------------------------------------------------- aggregation

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "loss_type, expected",
    [
        ("grpo", 2.75),  # ((1 + 2) / 2 + 4 / 1) / 2 = (1.5 + 4) / 2
        ("dapo", 7 / 3),  # (1 + 2 + 4) / 3 tokens
        ("dr_grpo", 7 / 6),  # (1 + 2 + 4) / (2 sequences * 3)
    ],
)
def test_aggregate_normalisation_and_micro_batches(loss_type, expected):
    totals = dict(loss_type=loss_type, num_sequences=2, num_tokens=3, max_completion_length=3)
    close(aggregate(PER_TOKEN, MASK, **totals), expected)
    # row 0 alone: grpo 1.5/2, dapo 3/3, dr_grpo 3/6; row 1: 4/2, 4/3, 4/6 -> each pair sums to the above
    parts = [aggregate(PER_TOKEN[i : i + 1], MASK[i : i + 1].bool(), **totals) for i in range(2)]
    close(sum(parts), expected)


def test_aggregate_guards_empty_and_masked_non_finite():
    per_token = torch.tensor([[1.0, float("inf")], [float("nan"), 2.0]])
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # masked inf / nan are ignored; the empty row contributes 0 and still counts: (1 + 0) / 2
    close(aggregate(per_token, mask, "grpo", 2, 1, 2), 0.5)
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        close(aggregate(per_token, torch.zeros(2, 2), loss_type, 0, 0, 2), 0.0)


# ---------------------------------------------------------------- PPO surrogate on initial samples

def test_ppo_clip_value_gradient_and_metrics():
    # seq 0 A = +1: ratios 1.5 (above 1.2, clipped) and 1.1; seq 1 A = -1: ratios 0.5 (below 0.8, clipped) and 0.9
    logp, old = ratio_inputs([[1.5, 1.1], [0.5, 0.9]])
    loss, grad, metrics = run(logp, old, [1.0, -1.0])
    # per token: -min(1.5, 1.2) = -1.2; -1.1; -min(-0.5, -0.8) = 0.8; 0.9 -> sum -0.6 / 4 tokens
    close(loss, -0.15)
    # clipped tokens: 0; inside: d(-A * ratio)/dlogp / 4 = -A * ratio / 4 -> -1.1/4, +0.9/4
    close(grad, [[0.0, -0.275], [0.0, 0.225]])
    assert metrics["clip_ratio/low_mean"] == pytest.approx(0.25)
    assert metrics["clip_ratio/high_mean"] == pytest.approx(0.25)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(0.5)
    assert metrics["refine/mean_prob"] == 0.0 and metrics["refine/token_frac"] == 0.0
    assert "intervention/selected_tokens" not in metrics and "intervention/selected_frac" not in metrics


def test_ppo_without_clip():
    logp, old = ratio_inputs([[1.5, 1.1], [0.5, 0.9]])
    loss, grad, _ = run(logp, old, [1.0, -1.0], clip=False)
    # -A * ratio: -1.5 - 1.1 + 0.5 + 0.9 = -1.2 -> / 4 = -0.3; grad -A * ratio / 4
    close(loss, -0.3)
    close(grad, [[-0.375, -0.275], [0.125, 0.225]])


# ---------------------------------------------------------------- refinement shaping

def test_shaping_weight_value():
    close(shaping_weight(torch.tensor(0.1), 0.1), 0.5)  # 0.1 / (0.1 + 0.1)


def test_refinement_shaping_value_gradient_and_metrics():
    # one refinement with p = 0.01, 0.1, 0.5; old_logp deliberately far off (ratios would be clipped)
    logp = torch.tensor([[0.01, 0.1, 0.5]]).log().requires_grad_()
    old = torch.full((1, 3), math.log(0.9))
    loss, grad, metrics = run(logp, old, [1.0], is_refinement=torch.tensor([True]),
                              loss_type="dr_grpo", num_sequences=1, max_completion_length=1)
    # dr_grpo with 1 sequence * length 1 divides by 1, so this is the sum before aggregation:
    # -(0.01/0.11 + 0.1/0.2 + 0.5/0.6) = -(0.090909 + 0.5 + 0.833333)
    close(loss, -1.424242)
    # d/dlogp -f(p) = -gamma p / (p + gamma)^2: 0.001/0.0121 = 0.082645, 0.01/0.04 = 0.25, 0.05/0.36 = 0.138889
    close(grad, [[-0.082645, -0.25, -0.138889]])
    assert metrics["refine/mean_prob"] == pytest.approx((0.01 + 0.1 + 0.5) / 3)  # 0.203333
    assert metrics["refine/token_frac"] == 1.0
    assert metrics["clip_ratio/region_mean"] == 0.0


def test_mixed_batch_refinement_token_fraction():
    # row 0 initial (2 valid tokens), row 1 refinement (1 valid of 2), ratios all 1, A = 0
    logp, old = ratio_inputs([[1.0, 1.0], [1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    _, _, metrics = run(logp, old, [0.0, 0.0], is_refinement=torch.tensor([False, True]), mask=mask)
    assert metrics["refine/token_frac"] == pytest.approx(1 / 3)
    assert metrics["refine/mean_prob"] == pytest.approx(0.5)  # logp = ln 0.5


# ---------------------------------------------------------------- GPPO

def test_gppo_keeps_bounded_gradient_where_ppo_has_none():
    # eps 0.2 / eps_h 0.28 / c 10. seq 0 A = +1: ratios 1.5 (> 1.28), 1.25 (inside);
    # seq 1 A = -1: ratios 0.5 (< 0.8), 20 (> c, dual clip)
    args = ([[1.5, 1.25], [0.5, 20.0]],)
    knobs = dict(epsilon=0.2, epsilon_high=0.28)
    loss, grad, metrics = run(*ratio_inputs(*args), [1.0, -1.0], intervention="gppo", gppo_dual_clip=10.0, **knobs)
    # values: -1.28, -1.25, -(-1)(0.8) = 0.8, min(max(20, 1.28), 10) = 10 -> 8.27 / 4
    close(loss, 2.0675)
    # grad = -A * F / 4 with F = 1.28, 1.25, 0.8, 0 (dual clip)
    close(grad, [[-0.32, -0.3125], [0.2, 0.0]])
    assert metrics["intervention/selected_tokens"] == 2.0  # the two tokens PPO would have frozen
    assert metrics["intervention/selected_frac"] == pytest.approx(0.5)  # 2 of 4 initial tokens
    _, ppo_grad, _ = run(*ratio_inputs(*args), [1.0, -1.0], **knobs)
    # plain PPO: 0 for both clipped tokens; the ratio-20 token gets -A * 20 / 4 = 5 (no dual clip)
    close(ppo_grad, [[0.0, -0.3125], [0.0, 5.0]])


# ---------------------------------------------------------------- Clip-Cov

def clip_cov_batch():
    # A = +2 / -2 (mean A = 0 over 8 tokens); logp seq0 [-.5, -.5, -.5, -3.5], seq1 [-3.5, -3.5, -3.5, -.5]
    # mean logp = -16 / 8 = -2 -> cov_t = A (logp + 2) = seq0 [3, 3, 3, -3], seq1 [3, 3, 3, -3]
    # token 0 of each sequence is PPO-clipped (ratio 1.5 with A > 0, 0.5 with A < 0): 4 candidates left
    return ratio_inputs([[1.5, 1, 1, 1], [0.5, 1, 1, 1]], [[-0.5, -0.5, -0.5, -3.5], [-3.5, -3.5, -3.5, -0.5]])


@pytest.mark.parametrize(
    "ratio, expected_selected",
    [(0.25, 2), (2e-4, 1), (1.0, 4)],  # max(1, int(8 * ratio)) = 2, 1 and 8 -> capped at the 4 candidates
)
def test_clip_cov_selects_budget_among_unclipped(ratio, expected_selected):
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        loss, grad, metrics = run(*clip_cov_batch(), [2.0, -2.0], intervention="clip_cov",
                                  clip_cov_ratio=ratio, generator=generator)
        # forward value untouched (detach): seq0 -2.4 - 2 - 2 - 2, seq1 1.6 + 2 + 2 + 2 -> -0.8 / 8
        close(loss, -0.1)
        assert metrics["intervention/selected_tokens"] == expected_selected
        # clipped tokens stay at 0; cov = -3 tokens keep -A * 1 / 8 = -0.25 / +0.25
        close(grad[:, [0, 3]], [[0.0, -0.25], [0.0, 0.25]])
        # candidates: unselected keep -A / 8, selected (detached) get 0
        candidates = grad[:, 1:3]
        assert int((candidates == 0).sum()) == expected_selected
        close(candidates[candidates != 0].abs(), [0.25] * (4 - expected_selected))


def test_clip_cov_excludes_ppo_clipped_tokens_without_clip():
    # clip=False: the surrogate is -A * ratio everywhere, but as in verl the tokens PPO would clip
    # (token 0 of each sequence, cov 3 inside the window) are still no candidates: 4 candidates, not 6
    loss, grad, metrics = run(*clip_cov_batch(), [2.0, -2.0], intervention="clip_cov", clip=False,
                              clip_cov_ratio=1.0, generator=torch.Generator().manual_seed(0))
    # seq0 -2 * 1.5 - 2 - 2 - 2 = -9, seq1 2 * 0.5 + 2 + 2 + 2 = 7 -> -2 / 8
    close(loss, -0.25)
    assert metrics["intervention/selected_tokens"] == 4.0  # budget max(1, int(8 * 1.0)) = 8, capped at 4
    assert metrics["intervention/selected_frac"] == pytest.approx(0.5)  # 4 of 8 initial tokens
    # token 0 unclipped: -A * ratio / 8 = -2 * 1.5 / 8 = -0.375, 2 * 0.5 / 8 = 0.125; candidates detached;
    # cov -3 tokens -A / 8
    close(grad, [[-0.375, 0.0, 0.0, -0.25], [0.125, 0.0, 0.0, 0.25]])


def test_clip_cov_same_seed_same_choice():
    grads = [run(*clip_cov_batch(), [2.0, -2.0], intervention="clip_cov", clip_cov_ratio=0.25,
                 generator=torch.Generator().manual_seed(7))[1] for _ in range(2)]
    close(grads[0], grads[1])


# ---------------------------------------------------------------- KL-Cov

def kl_cov_batch():
    # A = +1 / -1; logp seq0 [-1, -3], seq1 [-2, -6]: mean -3 -> logp + 3 = [2, 0, 1, -3]
    # cov_t = A (logp + 3) = [2, 0, -1, 3]; ratios 1.5, 1, 0.5, 2
    return ratio_inputs([[1.5, 1.0], [0.5, 2.0]], [[-1.0, -3.0], [-2.0, -6.0]])


def test_kl_cov_top_token_gets_abs_kl_and_no_clip():
    loss, grad, metrics = run(*kl_cov_batch(), [1.0, -1.0], intervention="kl_cov", kl_cov_ratio=0.25)
    # k = max(1, int(4 * 0.25)) = 1 -> seq1 token1 (cov 3); unclipped -A * ratio sums to -1.5 - 1 + 0.5 + 2 = 0,
    # plus 1 * |ln 2| = 0.693147 -> / 4
    close(loss, 0.173287)
    # grad -A * ratio / 4, the ratio-1.5 token is not clipped; selected: (2 + sign(ln 2) * 1) / 4 = 0.75
    close(grad, [[-0.375, -0.25], [0.125, 0.75]])
    assert metrics["intervention/selected_tokens"] == 1.0
    assert metrics["intervention/selected_frac"] == pytest.approx(0.25)  # 1 of 4 initial tokens


def test_kl_cov_statistics_ignore_refinement_tokens():
    logp, old = kl_cov_batch()
    # append a refinement row with A = 10, p = 1: had it entered the means, mean A = 10/3 and mean logp = -2,
    # cov of seq0 would be [-2.33, 2.33] and N = 6 -> k = 3
    logp = torch.cat([logp.detach(), torch.zeros(1, 2)]).requires_grad_()
    old = torch.cat([old, torch.zeros(1, 2)])
    loss, grad, metrics = run(logp, old, [1.0, -1.0, 10.0], is_refinement=torch.tensor([False, False, True]),
                              intervention="kl_cov", kl_cov_ratio=0.5)
    # N = 4 initial tokens -> k = 2: cov 3 (seq1 tok1) and 2 (seq0 tok0); 6 tokens in the denominator
    # initial: 0 + |ln 2| + |ln 1.5| = ln 3 = 1.098612; refinement: 2 * -10 * 1/1.1 = -18.181818 -> -17.083206 / 6
    close(loss, -2.847201)
    # seq0 tok0 (-1.5 + 1) / 6, tok1 -1 / 6; seq1 tok0 0.5 / 6, tok1 (2 + 1) / 6;
    # refinement -A gamma p / (p + gamma)^2 / 6 = -10 * 0.1 / 1.21 / 6 = -0.137741
    close(grad, [[-0.083333, -0.166667], [0.083333, 0.5], [-0.137741, -0.137741]])
    assert metrics["intervention/selected_tokens"] == 2.0


# ---------------------------------------------------------------- top-entropy tokens (80/20)

def top_entropy_batch():
    # rows 0, 1 initial (3 and 2 valid tokens), row 2 a refinement (2 tokens, p = 0.1), all ratios 1
    logp = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.1, 0.1, 0.1]]).log().requires_grad_()
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 1, 0]])
    # the refinement's entropies are the highest but only initial tokens compete
    entropy = torch.tensor([[0.1, 2.0, 0.5], [1.5, 0.2, 9.0], [3.0, 3.0, 9.0]])
    return logp, logp.detach().clone(), mask, entropy


@pytest.mark.parametrize(
    "loss_type, num_tokens, expected",
    [
        # kept = 2 selected + 2 refinement of 7 valid; num_tokens 7 -> 7 * 4/7 = 4: (-1 + 1 - 0.5 - 0.5) / 4
        ("dapo", 7, -0.25),
        # same micro-batch as half of a 14-token batch -> denominator 8
        ("dapo", 14, -0.125),
        # per-sequence mean over kept tokens: -1/1, +1/1, -1/2 -> -0.5 / 3 sequences
        ("grpo", 7, -0.5 / 3),
        # sum -1 / (3 sequences * 3)
        ("dr_grpo", 7, -1 / 9),
    ],
)
def test_top_entropy_trains_only_selected_tokens(loss_type, num_tokens, expected):
    logp, old, mask, entropy = top_entropy_batch()
    loss, grad, metrics = run(logp, old, [1.0, -1.0, 1.0], is_refinement=torch.tensor([False, False, True]),
                              mask=mask, entropy=entropy, intervention="top_entropy_quantile",
                              top_entropy_quantile=0.4, loss_type=loss_type, num_tokens=num_tokens)
    # N = 5 initial tokens, ceil(0.4 * 5) = 2: entropies 2.0 (row 0 tok 1) and 1.5 (row 1 tok 0)
    close(loss, expected)
    assert metrics["intervention/selected_tokens"] == 2.0
    assert metrics["intervention/selected_frac"] == pytest.approx(0.4)  # 2 of 5 initial tokens
    trained = grad != 0
    assert trained.tolist() == [[False, True, False], [True, False, False], [True, True, False]]
    if loss_type == "dapo" and num_tokens == 7:
        # -A * ratio / 4 = -0.25, +0.25; refinement -1 * 0.1 * 0.1 / 0.04 / 4 = -0.0625
        close(grad, [[0.0, -0.25, 0.0], [0.25, 0.0, 0.0], [-0.0625, -0.0625, 0.0]])


# ---------------------------------------------------------------- regularisers

def test_entropy_bonus():
    logp, old = ratio_inputs([[1.0, 1.0], [1.0, 1.0]])
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss, _, _ = run(logp, old, [0.0, 0.0], entropy=entropy, entropy_coef=0.01)
    # A = 0 so the policy term is 0; -0.01 * (1 + 2 + 3 + 4) / 4 = -0.025
    close(loss, -0.025)
    close(entropy.grad, torch.full((2, 2), -0.0025))  # -0.01 / 4


@pytest.mark.parametrize(
    "entropy_agg, loss_type, expected",
    [
        ("loss_type", "dr_grpo", -0.015),  # -0.01 * (1 + 2 + 3) / (2 sequences * 2)
        ("loss_type", "grpo", -0.0225),  # -0.01 * ((1 + 2) / 2 + 3 / 1) / 2 sequences
        ("token_mean", "dr_grpo", -0.02),  # -0.01 * (1 + 2 + 3) / 3 tokens, whatever the loss type
        ("token_mean", "grpo", -0.02),
    ],
)
def test_entropy_bonus_aggregation(entropy_agg, loss_type, expected):
    logp, old = ratio_inputs([[1.0, 1.0], [1.0, 1.0]])
    entropy = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the 4 is padding
    loss, _, _ = run(logp, old, [0.0, 0.0], mask=mask, entropy=entropy, entropy_coef=0.01, entropy_agg=entropy_agg,
                     loss_type=loss_type, num_tokens=3)
    close(loss, expected)  # A = 0: only the bonus
    if entropy_agg == "token_mean":
        close(entropy.grad, [[-0.01 / 3, -0.01 / 3], [-0.01 / 3, 0.0]])


def refinement_weight_batch():
    # rows 0, 1 initial (A = +1, -1; ratio 1; row 1 has 1 valid token), row 2 a refinement (A = +1, p = 0.1)
    logp = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.1, 0.1]]).log().requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return logp, logp.detach().clone(), mask


@pytest.mark.parametrize(
    "loss_type, equal, paper",
    [
        # per token: row 0 -1, -1; row 1 +1; refinement -f(0.1) = -0.5 each, times w = (3 - 1) / 1 = 2 with paper
        ("dr_grpo", (-2 + 1 - 1) / 6, (-2 + 1 - 2) / 6),  # / (3 sequences * 2)
        ("grpo", (-1 + 1 - 0.5) / 3, (-1 + 1 - 1) / 3),  # per-sequence means -1, +1, -0.5 (paper -1) / 3
        ("dapo", (-2 + 1 - 1) / 5, (-2 + 1 - 2) / 5),  # / 5 valid tokens
    ],
)
def test_paper_refinement_weight(loss_type, equal, paper):
    totals = dict(is_refinement=torch.tensor([False, False, True]), loss_type=loss_type, num_tokens=5,
                  num_refinements=1)
    loss, grad, _ = run(*refinement_weight_batch()[:2], [1.0, -1.0, 1.0], mask=refinement_weight_batch()[2], **totals)
    close(loss, equal)
    loss, paper_grad, _ = run(*refinement_weight_batch()[:2], [1.0, -1.0, 1.0], mask=refinement_weight_batch()[2],
                              refinement_weight="paper", **totals)
    close(loss, paper)
    # initial rows unchanged; refinement tokens' gradient doubles (d -f / d logp = -0.1 * 0.1 / 0.04 = -0.25, times 2)
    close(paper_grad[:2], grad[:2])
    close(paper_grad[2], 2 * grad[2])
    if loss_type == "dr_grpo":
        close(paper_grad[2], [-0.5 / 6, -0.5 / 6])


def test_paper_refinement_weight_uses_batch_counts_across_micro_batches():
    # the counts are the optimizer batch's: a micro-batch of the refinement alone still gets w = 2
    logp, old, mask = refinement_weight_batch()
    totals = dict(loss_type="dr_grpo", num_sequences=3, num_tokens=5, max_completion_length=2, num_refinements=1,
                  refinement_weight="paper")
    parts = [policy_loss(logp[rows], old[rows], torch.tensor([1.0, -1.0, 1.0])[rows], mask[rows],
                         torch.tensor([False, False, True])[rows], **totals)[0] for rows in ([0, 1], [2])]
    close(sum(parts), -0.5)  # (-2 + 1 - 2) / 6, as in one micro-batch


@pytest.mark.parametrize("intervention", ["none", "gppo", "kl_cov", "clip_cov", "top_entropy_quantile"])
def test_masked_padding_never_makes_non_finite_gradients(intervention):
    # valid: row 0 tokens 0, 1 (initial), row 1 token 0 (initial), row 2 token 0 (refinement); the rest padding.
    # The padding imitates zero-padded old_logp / ref_logp rows: logp -1e4 under old_logp 0 gives ratio
    # exp(-1e4) = 0 (gppo's ratio / ratio.detach() = 0 / 0) and k3 exp(0 + 1e4) = inf; logp 0 under
    # old_logp -1e4 gives ratio exp(1e4) = inf. Unmasked, each turns the zero upstream gradient into 0 * inf = NaN.
    mask = torch.tensor([[1.0, 1, 0], [1, 0, 0], [1, 0, 0]])
    valid_logp = torch.tensor([[-0.5, -1.0], [-0.7, 0.0], [-2.0, 0.0]])
    kwargs = dict(is_refinement=torch.tensor([False, False, True]), mask=mask, beta=0.1, intervention=intervention,
                  entropy=torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 0.0], [1.0, 0.0, 0.0]]),
                  clip_cov_lb=-10.0, clip_cov_ratio=0.5, kl_cov_ratio=0.5)

    def batch(pad_logp, pad_old, pad_ref):
        logp = torch.tensor([[valid_logp[0, 0], valid_logp[0, 1], pad_logp], [valid_logp[1, 0], pad_logp, 0.0],
                             [valid_logp[2, 0], pad_logp, pad_logp]])
        old = torch.tensor([[-0.4, -1.3, pad_old], [-0.9, pad_old, pad_old], [-2.0, pad_old, pad_old]])
        ref = torch.tensor([[-0.6, -0.8, pad_ref], [-0.7, pad_ref, pad_ref], [-1.5, pad_ref, pad_ref]])
        return logp.requires_grad_(), old, ref

    grads = []
    for pad in ((-1e4, 0.0, 0.0), (0.0, -1e4, 0.0), (-1.0, -1.0, -1.0)):   # the last pads harmlessly
        logp, old, ref = batch(*pad)
        loss, grad, _ = run(logp, old, [1.0, -1.0, 1.0], ref_logp=ref, generator=torch.Generator().manual_seed(0),
                            **kwargs)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), (pad, grad)
        assert (grad[mask == 0] == 0).all()
        grads.append(grad)
    close(grads[0], grads[2])
    close(grads[1], grads[2])


def test_k3_kl_to_reference():
    logp, old = ratio_inputs([[1.0, 1.0, 1.0]])
    # ref - logp = ln 2, -ln 2, 0 -> k3 = e^d - d - 1 = 0.306853, 0.193147, 0 (sum 0.5)
    ref = logp.detach() + torch.tensor([[math.log(2), -math.log(2), 0.0]])
    loss, grad, _ = run(logp, old, [0.0], ref_logp=ref, beta=0.1)
    close(loss, 0.1 * 0.5 / 3)  # 0.016667
    # d k3 / d logp = 1 - e^d = -1, 0.5, 0 -> * 0.1 / 3
    close(grad, [[-0.033333, 0.016667, 0.0]])


# ---------------------------------------------------------------- entropy lab statistics

def test_entropy_stats_hand_made():
    entropy = torch.tensor([[0.2, 1.0, 3.0], [0.6, 1.8, 9.9], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    stats = entropy_stats(entropy, mask)
    # valid sorted [0.2, 0.6, 1.0, 1.8, 3.0], N = 5
    assert stats["entropy/token_mean"] == pytest.approx(6.6 / 5)  # 1.32
    assert stats["entropy/seq_mean"] == pytest.approx((4.2 / 3 + 2.4 / 2) / 2)  # (1.4 + 1.2) / 2; empty row skipped
    assert stats["entropy/p80"] == pytest.approx(2.04)  # position 0.8 * 4 = 3.2 -> 1.8 + 0.2 * (3.0 - 1.8)
    assert stats["entropy/frac_above_0.5"] == pytest.approx(0.8)  # 0.6, 1.0, 1.8, 3.0
    assert stats["entropy/frac_above_1.0"] == pytest.approx(0.4)  # strictly above: 1.8, 3.0
    assert stats["entropy/frac_above_2.0"] == pytest.approx(0.2)
    assert stats["entropy/top20_mean"] == pytest.approx(3.0)  # ceil(0.2 * 5) = 1 token
    stats = entropy_stats(entropy, mask, thresholds=(), quantile=0.6)
    assert stats["entropy/p60"] == pytest.approx(1.32)  # position 2.4 -> 1.0 + 0.4 * 0.8
    assert stats["entropy/top40_mean"] == pytest.approx(2.4)  # ceil(0.4 * 5) = 2 -> (3.0 + 1.8) / 2
    # 1 - 0.7 = 0.30000000000000004, times 10 = 3.0000000000000004: still the top 3 of 1..10 -> (8 + 9 + 10) / 3
    stats = entropy_stats(torch.arange(1.0, 11.0)[None], torch.ones(1, 10), thresholds=(), quantile=0.7)
    assert stats["entropy/top30_mean"] == pytest.approx(9.0)


def test_entropy_stats_empty_mask_is_zero():
    stats = entropy_stats(torch.ones(2, 3), torch.zeros(2, 3))
    assert set(stats) == {"entropy/token_mean", "entropy/seq_mean", "entropy/p80", "entropy/top20_mean",
                          "entropy/frac_above_0.5", "entropy/frac_above_1.0", "entropy/frac_above_2.0"}
    assert all(value == 0.0 for value in stats.values())


def test_logp_advantage_cov():
    logp = torch.tensor([[-1.0, -3.0], [-2.0, -6.0]])
    adv = torch.tensor([1.0, -1.0])
    # mean logp -3, mean A 0: (A)(logp + 3) = [2, 0, -1, 3] -> 4 / 4
    assert logp_advantage_cov(logp, adv, torch.ones(2, 2)) == pytest.approx(1.0)
    # without (0, 1): logp [-1, -2, -6] mean -3 -> [2, 1, -3]; A [1, -1, -1] mean -1/3 -> [4/3, -2/3, -2/3]
    # products [8/3, -2/3, 2] -> 4 / 3
    assert logp_advantage_cov(logp, adv, torch.tensor([[1, 0], [1, 1]])) == pytest.approx(4 / 3)
    assert logp_advantage_cov(logp, adv, torch.zeros(2, 2)) == 0.0


# ---------------------------------------------------------------- errors

def test_unknown_names_raise():
    logp, old = ratio_inputs([[1.0]])
    with pytest.raises(ValueError, match="group"):
        group_advantages(torch.ones(2), torch.zeros(2, dtype=torch.long), "batch")
    with pytest.raises(ValueError, match="dr_grpo"):
        aggregate(PER_TOKEN, MASK, "token_mean", 2, 3, 3)
    with pytest.raises(ValueError, match="dr_grpo"):
        run(logp, old, [1.0], loss_type="seq_mean")
    with pytest.raises(ValueError, match="kl_cov"):
        run(logp, old, [1.0], intervention="clip_higher")
    with pytest.raises(ValueError, match="token_mean"):
        run(logp, old, [1.0], entropy_agg="seq_mean")
    with pytest.raises(ValueError, match="paper"):
        run(logp, old, [1.0], refinement_weight="uniform")


def test_missing_inputs_raise():
    logp, old = ratio_inputs([[1.0]])
    with pytest.raises(ValueError, match="entropy"):
        run(logp, old, [1.0], intervention="top_entropy_quantile")
    with pytest.raises(ValueError, match="entropy"):
        run(logp, old, [1.0], entropy_coef=0.01)
    with pytest.raises(ValueError, match="ref_logp"):
        run(logp, old, [1.0], beta=0.1)
