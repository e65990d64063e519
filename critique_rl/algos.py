"""Loss and advantage math for Critique-GRPO and the entropy interventions.

Pure tensor functions, no I/O and no config objects. Shapes: B sequences, T completion tokens,
V vocabulary. Per-token tensors are (B, T); per-sequence tensors are (B,). Losses return
``(loss, metrics)`` with ``metrics`` a dict of python floats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALE_REWARDS = ("none", "group")
INTERVENTIONS = ("none", "clip_cov", "kl_cov", "gppo", "top_entropy_quantile")
ENTROPY_AGGS = ("loss_type", "token_mean")
REFINEMENT_WEIGHTS = ("equal", "paper")


def token_logprobs_and_entropy(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Log-probability of ``tokens`` and entropy (nats) of softmax(logits / temperature).

    ``logits`` (B, T, V) are aligned so that ``logits[:, t]`` predicts ``tokens[:, t]``.
    Computed in float32: bf16 log-probs are too coarse for the PPO ratio exp(logp - old_logp).
    Example: logits all zero over V = 4 -> logp = -ln 4 and entropy = ln 4 everywhere.
    """
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V), the only full copy kept
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, T)
    return logp, entropy


def group_advantages(rewards: Tensor, group_index: Tensor, scale_rewards: str = "none", eps: float = 1e-4,
                     unbiased: bool = False) -> Tensor:
    """A = r - mean(group), optionally divided by the group's std + eps.

    ``rewards`` (N,), ``group_index`` (N,) long with ids 0..G-1 in any order; groups may differ
    in size (e.g. 7 initial samples + 1 refinement). The std is the population one (divide by n)
    unless ``unbiased`` (divide by n - 1, as torch.std, TRL and the official code); a group of one
    gets A = 0 rather than NaN either way (its centred reward is 0 and n - 1 is taken as 1).
    Example: seven 0s and one 1 in a group -> -0.125 for each 0 and +0.875 for the 1;
    [1, 0, 0, 0]: mean 0.25, population std 0.433, unbiased std 0.5.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; expected one of {SCALE_REWARDS}")
    rewards = rewards.float()
    num_groups = int(group_index.max()) + 1 if group_index.numel() else 0
    count = torch.zeros(num_groups, device=rewards.device).index_add_(0, group_index, torch.ones_like(rewards))
    count = count.clamp(min=1)  # (G,); an id with no member is never gathered, only kept finite
    mean = torch.zeros_like(count).index_add_(0, group_index, rewards) / count
    centered = rewards - mean[group_index]  # (N,)
    if scale_rewards == "none":
        return centered
    dof = (count - 1).clamp(min=1) if unbiased else count
    std = (torch.zeros_like(count).index_add_(0, group_index, centered.square()) / dof).sqrt()
    return centered / (std[group_index] + eps)


def shaping_weight(p: Tensor, gamma: float) -> Tensor:
    """Critique-GRPO policy shaping f(p) = p / (p + gamma); f(0.1) = 0.5 for gamma = 0.1."""
    return p / (p + gamma)


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    loss_type: str,
    num_sequences: float,
    num_tokens: float,
    max_completion_length: int,
) -> Tensor:
    """Reduce per-token losses (B, T) over a 0/1 ``mask`` (B, T) to a scalar.

    ``num_sequences`` and ``num_tokens`` count the whole optimizer batch (all micro-batches and
    processes), so summing the results of the micro-batches gives the batch loss exactly.
      grpo:    sum_i (sum_t l*m / sum_t m) / num_sequences
      dapo:    sum_it l*m / num_tokens
      dr_grpo: sum_it l*m / (num_sequences * max_completion_length)
    Example: l = [[1, 2, 3], [4, 5, 6]], m = [[1, 1, 0], [1, 0, 0]] -> grpo (1.5 + 4) / 2 = 2.75,
    dapo 7 / 3, dr_grpo 7 / (2 * 3).
    """
    mask = mask.bool()
    # where, not multiply: a non-finite value under the mask (padding) must not turn into NaN
    masked = torch.where(mask, per_token, 0.0)  # (B, T)
    if loss_type == "grpo":
        per_seq = masked.sum(-1) / mask.sum(-1).clamp(min=1)  # (B,); empty sequences give 0
        return per_seq.sum() / max(num_sequences, 1)
    if loss_type == "dapo":
        return masked.sum() / max(num_tokens, 1)
    if loss_type == "dr_grpo":
        return masked.sum() / max(num_sequences * max_completion_length, 1)
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (bool, same shape); 0 when the mask is empty."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def _token_cov(logp: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """cov_t = (A_t - mean A)(logp_t - mean logp), means token-weighted over ``mask``; (B, T).

    The mean of cov_t over the mask is the population Cov(log pi, A), whose sign drives the
    entropy change under policy gradient (Cui et al.).
    """
    logp = logp.detach()
    adv = advantages.detach()[:, None].expand_as(logp)  # (B, T)
    return (adv - _masked_mean(adv, mask)) * (logp - _masked_mean(logp, mask))


def _fraction_count(n: int, ratio: float) -> int:
    """max(1, int(n * ratio)) capped at n: the Clip-Cov / KL-Cov token budget."""
    return min(n, max(1, int(n * ratio)))


def _top_k_mask(scores: Tensor, valid: Tensor, k: int) -> Tensor:
    """Bool (B, T) marking the k highest ``scores`` among ``valid`` positions (k <= valid count)."""
    flat = scores.detach().masked_fill(~valid, float("-inf")).flatten()
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[flat.topk(k).indices] = True
    return chosen.view_as(valid)


def _random_subset_mask(candidates: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Bool (B, T) marking min(k, #candidates) candidates drawn uniformly without replacement."""
    index = candidates.flatten().nonzero().squeeze(1)  # (C,)
    device = generator.device if generator is not None else index.device
    pick = torch.randperm(index.numel(), generator=generator, device=device)[:k].to(index.device)
    chosen = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    chosen[index[pick]] = True
    return chosen.view_as(candidates)


def _gppo_loss(ratio: Tensor, adv: Tensor, epsilon: float, epsilon_high: float, dual_clip: float) -> Tensor:
    """GPPO per-token loss: PPO's forward value, but clipped tokens keep a bounded gradient.

    ratio / sg(ratio) is 1 in value with the gradient of the ratio, so a bound written as
    (1 + eps_h) * ratio / sg(ratio) gives gradient factor F = 1 + eps_h instead of PPO's 0.
    Example (A = +1, eps_h = 0.28): ratio 1.5 -> loss -1.28, d loss / d logp = -1.28.
    """
    unit = ratio / ratio.detach()
    upper = torch.where(ratio > 1 + epsilon_high, (1 + epsilon_high) * unit, ratio)
    bounded = torch.where(ratio < 1 - epsilon, (1 - epsilon) * unit, upper)
    loss = torch.maximum(-adv * ratio, -adv * bounded)
    # dual clip: for A < 0 a huge ratio would give an unbounded loss; cap it at -c*A (constant, no gradient)
    return torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)


def truncated_is_weight(old_logp: Tensor, rollout_logp: Tensor, cap: float) -> Tensor:
    """Per-token weight min(pi_old / pi_rollout, cap) correcting for sampling with an engine whose
    log-probs differ from the trainer's (vLLM kernels, bf16); shapes (B, T).

    >>> truncated_is_weight(torch.tensor([[-1.0, -1.0]]), torch.tensor([[-1.0, -3.0]]), cap=2.0)
    tensor([[1., 2.]])
    """
    return torch.exp(old_logp - rollout_logp).clamp(max=cap)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    is_refinement: Tensor,
    *,
    loss_type: str,
    num_sequences: float,
    num_tokens: float,
    max_completion_length: int,
    epsilon: float = 0.2,
    epsilon_high: float = 0.2,
    clip: bool = True,
    gamma: float = 0.1,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    intervention: str = "none",
    clip_cov_ratio: float = 2e-4,
    clip_cov_lb: float = 1.0,
    clip_cov_ub: float = 5.0,
    kl_cov_ratio: float = 2e-3,
    kl_cov_coef: float = 1.0,
    gppo_dual_clip: float = 10.0,
    top_entropy_quantile: float = 0.2,
    generator: torch.Generator | None = None,
    tis_weight: Tensor | None = None,
    entropy_agg: str = "loss_type",
    refinement_weight: str = "equal",
    num_refinements: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Critique-GRPO loss on one micro-batch.

    ``logp``, ``old_logp``, ``mask``, ``entropy``, ``ref_logp``: (B, T); ``advantages`` and
    ``is_refinement``: (B,). Initial samples get the PPO surrogate with ratio exp(logp - old_logp)
    (clipped to [1 - epsilon, 1 + epsilon_high] when ``clip``); refinements get -A * f(p) with
    p = exp(logp) and f = shaping_weight, without ratio or clip. ``intervention`` changes the
    initial-sample tokens only:
      none | clip_cov (detach a random few not-yet-clipped tokens with lb < cov_t < ub; forward
      value kept) | kl_cov (no clip; + kl_cov_coef * |logp - old_logp| on the top tokens by cov_t)
      | gppo (clipped tokens keep gradient 1 - epsilon / 1 + epsilon_high, dual clip
      ``gppo_dual_clip``; ignores ``clip``) | top_entropy_quantile (only the ceil(rho * N)
      highest-entropy initial tokens are trained; see below).
    top_entropy_quantile drops the other initial tokens from the mask, so "grpo" averages each
    sequence over its kept tokens, "dr_grpo" keeps its constant, and "dapo" becomes a token mean
    over the kept tokens (selected + refinement) weighted by this micro-batch's share of the
    batch's tokens: num_tokens * kept / valid. With equal micro-batches that is the paper's
    per-micro-batch token mean divided by the number of micro-batches.
    clip_cov's candidates always exclude the tokens PPO clips (ratio > 1 + epsilon_high with A > 0,
    ratio < 1 - epsilon with A < 0), also when ``clip`` is off, as verl's clip_by_origin does.
    The entropy bonus (-entropy_coef * H) and the k3 KL to ``ref_logp`` (beta) cover all valid
    tokens and use the caller's totals in every mode; the bonus is aggregated like the loss
    (``entropy_agg`` "loss_type") or as a token mean sum H / num_tokens ("token_mean", the official
    code and TRL). ``tis_weight`` (B, T), from ``truncated_is_weight``, scales the initial-sample
    token losses. The ratio's log is formed only at valid initial tokens (0 elsewhere), and the
    k3 log ratio only at valid tokens, so zero-padded ``old_logp`` / ``ref_logp`` rows never make
    an inf, and no 0 * inf = NaN reaches the gradient.

    ``refinement_weight`` "equal" weighs every token alike (the official code). "paper" multiplies
    the per-token policy loss of refinement rows by w = (num_sequences - num_refinements) /
    num_refinements, both counts of the whole optimizer batch (n_I initial, n_R refinement
    sequences, N = n_I + n_R), so that each part is normalised by its own count as in the paper's
    J = J_init + J_refi: a refinement weighs n/k times a sample. Per loss type:
      grpo:    [sum_init mean_t l + w * sum_refi mean_t l] / N
               = n_I / N * (mean over initial sequences + mean over refinements)
      dr_grpo: [sum_init sum_t l + w * sum_refi sum_t l] / (N * L)
               = n_I / N * (sum_init / (n_I * L) + sum_refi / (n_R * L))
      dapo:    [sum_init-tokens l + w * sum_refi-tokens l] / num_tokens: a refinement token weighs
               w initial tokens, the denominator is unchanged.
    The constant n_I / N = n / (n + k) is a fixed scale of the learning rate. The entropy bonus and
    the KL are not reweighted.
    """
    if intervention not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {intervention!r}; expected one of {INTERVENTIONS}")
    if entropy_agg not in ENTROPY_AGGS:
        raise ValueError(f"unknown entropy_agg {entropy_agg!r}; expected one of {ENTROPY_AGGS}")
    if refinement_weight not in REFINEMENT_WEIGHTS:
        raise ValueError(f"unknown refinement_weight {refinement_weight!r}; expected one of {REFINEMENT_WEIGHTS}")
    if entropy is None and (entropy_coef > 0 or intervention == "top_entropy_quantile"):
        raise ValueError("entropy is required when entropy_coef > 0 or intervention='top_entropy_quantile'")
    if ref_logp is None and beta > 0:
        raise ValueError("ref_logp is required when beta > 0")

    mask = mask.bool()
    refine = is_refinement.bool()[:, None] & mask  # (B, T)
    initial = ~is_refinement.bool()[:, None] & mask  # (B, T)
    n_initial = int(initial.sum())
    adv = advantages.detach()[:, None].expand_as(logp)  # (B, T)
    # masked before exp: zero-padded old_logp rows must not give inf (and 0 * inf = NaN gradients)
    log_ratio = torch.where(initial, logp - old_logp, 0.0)
    ratio = torch.exp(log_ratio)
    # TRL's definitions: tokens PPO's min sends to the flat clamped branch (zero gradient); the
    # clip_ratio metrics count them in every mode, also when this mode does not clip
    clipped_low = (ratio < 1 - epsilon) & (adv < 0) & initial
    clipped_high = (ratio > 1 + epsilon_high) & (adv > 0) & initial

    if intervention == "gppo":
        initial_loss = _gppo_loss(ratio, adv, epsilon, epsilon_high, gppo_dual_clip)
    elif clip and intervention != "kl_cov":
        initial_loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - epsilon, 1 + epsilon_high))
    else:
        initial_loss = -adv * ratio

    if tis_weight is not None:
        initial_loss = initial_loss * tis_weight.detach()
    selected = clipped_low | clipped_high  # gppo: the tokens whose gradient it keeps and PPO drops
    if intervention == "clip_cov":
        cov = _token_cov(logp, advantages, initial)
        # the PPO-clipped tokens are never candidates, whether or not this loss clips (verl's clip_by_origin)
        candidates = initial & ~selected & (cov > clip_cov_lb) & (cov < clip_cov_ub)
        selected = _random_subset_mask(candidates, _fraction_count(n_initial, clip_cov_ratio), generator)
        initial_loss = torch.where(selected, initial_loss.detach(), initial_loss)
    elif intervention == "kl_cov":
        cov = _token_cov(logp, advantages, initial)
        selected = _top_k_mask(cov, initial, _fraction_count(n_initial, kl_cov_ratio))
        initial_loss = initial_loss + torch.where(selected, kl_cov_coef * log_ratio.abs(), 0.0)
    elif intervention == "top_entropy_quantile":
        k = min(n_initial, math.ceil(top_entropy_quantile * n_initial))
        selected = _top_k_mask(entropy, initial, k)

    refine_loss = -adv * shaping_weight(logp.exp(), gamma)
    if refinement_weight == "paper" and num_refinements > 0:
        refine_loss = refine_loss * ((num_sequences - num_refinements) / num_refinements)
    per_token = torch.where(refine, refine_loss, initial_loss)  # (B, T)
    policy_mask, policy_num_tokens = mask, num_tokens
    if intervention == "top_entropy_quantile":
        policy_mask = refine | selected
        policy_num_tokens = num_tokens * int(policy_mask.sum()) / max(int(mask.sum()), 1)
    totals = dict(loss_type=loss_type, num_sequences=num_sequences, max_completion_length=max_completion_length)
    loss = aggregate(per_token, policy_mask, num_tokens=policy_num_tokens, **totals)
    if entropy_coef > 0:
        entropy_totals = {**totals, "loss_type": "dapo"} if entropy_agg == "token_mean" else totals
        loss = loss - entropy_coef * aggregate(entropy, mask, num_tokens=num_tokens, **entropy_totals)
    if beta > 0:
        log_ref_ratio = torch.where(mask, ref_logp.detach() - logp, 0.0)
        k3 = torch.exp(log_ref_ratio) - log_ref_ratio - 1
        loss = loss + beta * aggregate(k3, mask, num_tokens=num_tokens, **totals)

    with torch.no_grad():
        metrics = {
            "clip_ratio/low_mean": float(_masked_mean(clipped_low.float(), initial)),
            "clip_ratio/high_mean": float(_masked_mean(clipped_high.float(), initial)),
            "clip_ratio/region_mean": float(_masked_mean((clipped_low | clipped_high).float(), initial)),
            "refine/mean_prob": float(_masked_mean(logp.exp(), refine)),
            "refine/token_frac": float(refine.sum() / mask.sum().clamp(min=1)),
        }
        if intervention != "none":
            metrics["intervention/selected_tokens"] = float(selected.sum())
            metrics["intervention/selected_frac"] = float(selected.sum()) / max(n_initial, 1)
    return loss, metrics


def entropy_stats(
    entropy: Tensor, mask: Tensor, thresholds: tuple[float, ...] = (0.5, 1.0, 2.0), quantile: float = 0.8
) -> dict[str, float]:
    """Summary of token entropies (B, T) over a 0/1 ``mask`` (B, T); all zeros if the mask is empty.

    Keys (defaults): entropy/token_mean, entropy/seq_mean (sequences without valid tokens are
    skipped), entropy/p80 (torch.quantile, linear interpolation), entropy/frac_above_{t}
    (strictly above t), entropy/top20_mean (mean of the ceil(0.2 * N) largest). The 80 and 20
    follow ``quantile``. Example: valid [0.2, 0.6, 1.0, 1.8, 3.0] -> p80 = 1.8 + 0.2 * 1.2 = 2.04,
    top20_mean = 3.0.
    """
    mask = mask.bool()
    entropy = entropy.detach().float()
    values = entropy[mask]  # (N,)
    top_fraction = 1 - quantile
    keys_top = (f"entropy/p{100 * quantile:g}", f"entropy/top{100 * top_fraction:g}_mean")
    above = {f"entropy/frac_above_{t}": (values > t) for t in thresholds}
    if values.numel() == 0:
        return dict.fromkeys(("entropy/token_mean", "entropy/seq_mean", *keys_top, *above), 0.0)
    seq_len = mask.sum(-1)  # (B,)
    seq_mean = torch.where(mask, entropy, 0.0).sum(-1)[seq_len > 0] / seq_len[seq_len > 0]
    # 1 - 0.7 is 0.30000000000000004: without the tolerance 10 tokens would give a top 4, not 3
    k = max(1, math.ceil(top_fraction * values.numel() - 1e-9))
    stats = {
        "entropy/token_mean": float(values.mean()),
        "entropy/seq_mean": float(seq_mean.mean()),
        keys_top[0]: float(torch.quantile(values, quantile)),
        keys_top[1]: float(values.topk(k).values.mean()),
    }
    stats.update({key: float(flags.float().mean()) for key, flags in above.items()})
    return stats


def entropy_by_kind(
    entropy: Tensor, mask: Tensor, kinds: Tensor, names: tuple[str, ...], quantile: float = 0.8
) -> dict[str, float]:
    """Where entropy lives: token entropies (B, T) over a 0/1 ``mask`` (B, T) split by token kind.

    ``kinds`` (B, T) long indexes ``names`` (its values off the mask are ignored). Keys, per name:
    entropy/kind/<name> (mean entropy of its valid tokens; absent when it has none),
    entropy/kind_share/<name> (its share of the valid tokens) and entropy/top20_kind/<name> (its
    share of the k = ceil(0.2 * N) highest-entropy valid tokens, the same top-k rule as
    ``entropy_stats``; 20 follows ``quantile``). Empty mask: {}.
    Example: names (a, b), valid entropies [0.1, 0.3, 2.0, 1.0, 0.2] of kinds [a, a, b, b, a]
    -> kind/a = 0.2, kind/b = 1.5, kind_share 0.6 / 0.4, k = 1 (the 2.0): top20_kind 0 / 1.
    """
    mask = mask.bool()
    values = entropy.detach().float()[mask]  # (N,)
    labels = kinds.to(mask.device)[mask]  # (N,)
    n = values.numel()
    if n == 0:
        return {}
    top_fraction = 1 - quantile
    k = max(1, math.ceil(top_fraction * n - 1e-9))  # the tolerance as in entropy_stats
    top_labels = labels[values.topk(k).indices]  # (k,)
    out = {}
    for i, name in enumerate(names):
        chosen = labels == i
        count = int(chosen.sum())
        if count:
            out[f"entropy/kind/{name}"] = float(values[chosen].mean())
        out[f"entropy/kind_share/{name}"] = count / n
        out[f"entropy/top{100 * top_fraction:g}_kind/{name}"] = int((top_labels == i).sum()) / k
    return out


def logp_advantage_cov(logp: Tensor, advantages: Tensor, mask: Tensor) -> float:
    """Population Cov(log pi, A) over valid tokens, A broadcast from ``advantages`` (B,); 0 if empty.

    Example: logp [[-1, -3], [-2, -6]], A [1, -1], all valid -> mean of [2, 0, -1, 3] = 1.0.
    """
    mask = mask.bool()
    return float(_masked_mean(_token_cov(logp, advantages, mask), mask))
