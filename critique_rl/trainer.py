"""The RL loop: sample -> verify -> critique -> refine -> mix -> loss -> update -> log.

Read ``Trainer.step`` top to bottom; the math lives in ``algos`` and the choices in ``refine``.
``method: grpo`` runs the same code with the critique/refine phases switched off.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from critique_rl import algos
from critique_rl.alarms import AlarmSettings, check_alarms, fallback_streak
from critique_rl.alarms import describe as describe_alarm
from critique_rl.batching import (
    pad_sequences,
    sequence_logits,
    token_budget_microbatches,
)
from critique_rl.checkpoint import (
    latest_checkpoint,
    restore_rng,
    resume_point,
    rng_state,
    save_checkpoint,
)
from critique_rl.config import Config, ConfigError
from critique_rl.critics import build_critic
from critique_rl.distributed import Distributed
from critique_rl.evaluate import greedy_pass1, pass_ks, sampled_pass_at_ks
from critique_rl.interrupts import ALARM_EXIT_CODE, GracefulStop, NonFiniteLoss, TrainingInterrupted
from critique_rl.metrics import MetricsLogger, one_line_summary
from critique_rl.modeling import load_policy, load_trained_weights
from critique_rl.refine import choose_refinements, groups_to_refine
from critique_rl.refiner import (
    BackgroundRefiner,
    DelayedGroup,
    Refinements,
    Refiner,
    check_async,
    refine_metrics,
    score_completions,
)
from critique_rl.rollout import SamplingParams, build_engine, rollout_sampling
from critique_rl.tasks import build_task
from critique_rl.templates import PolicyPrompts


@dataclass
class Member:
    """One trained response of a group; refinements carry the plain solve prompt."""

    group: int
    prompt_ids: list[int]
    completion_ids: list[int]
    reward: float
    is_refinement: bool
    rollout_logprobs: list[float] | None = None         # the sampler's, when the engine reports them
    old_logp: torch.Tensor | None = None                # under the policy that sampled it (off-policy updates, delayed groups)
    old_entropy: torch.Tensor | None = None             # the same forward's token entropies, on the CPU (for metrics)
    ref_logp: torch.Tensor | None = None                # under the frozen reference (beta > 0)
    advantage: float = 0.0                              # set by optimize
    token_logprobs: list[float] | None = None           # set by optimize for the groups logged to samples.jsonl
    problem: object | None = None                       # initial samples: the task problem, for token kinds


@dataclass
class Rollout:
    members: list[Member]
    metrics: dict[str, float]
    samples: list[dict] = field(default_factory=list)     # human-readable record of some groups


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, show_progress: bool = True):
        self.cfg = cfg
        self.run_dir = run_dir
        self.dist = Distributed()
        self.show_progress = show_progress and self.dist.is_main
        if cfg.train.prompts_per_step % (self.dist.world_size * cfg.train.mini_batches):
            raise ConfigError(f"train.prompts_per_step ({cfg.train.prompts_per_step}) must be divisible by the number of "
                              f"processes ({self.dist.world_size}) times train.mini_batches ({cfg.train.mini_batches})")
        self.model, self.tokenizer = load_policy(cfg.model.name_or_path, cfg.model)
        self.engine = build_engine(cfg.rollout, self.model, self.tokenizer, run_dir)
        self.prompts = PolicyPrompts(cfg.prompts, self.tokenizer)
        self.task = build_task(cfg)
        check_async(cfg, self.dist.world_size)
        # refine.mode async: a background process critiques and refines; sync: this one, inside the step.
        self.background = BackgroundRefiner(cfg, run_dir) if cfg.method == "critique_grpo" and cfg.refine.mode == "async" \
            else None
        self.critic = build_critic(cfg.critic, self.task.name, policy=(self.model, self.tokenizer), run_dir=run_dir,
                                   seed=cfg.seed) if cfg.method == "critique_grpo" and self.background is None else None
        self.refiner = None if self.critic is None else \
            Refiner(cfg, self.task, self.prompts, self.engine, self.tokenizer, self.critic)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.learning_rate,
                                           weight_decay=cfg.train.weight_decay)
        warmup = max(1, cfg.train.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False) if cfg.loss.beta > 0 else None
        self.step_index = 0
        self.previous_entropy: float | None = None   # for entropy/delta, the change this step caused
        self.bad_steps = 0
        self.zero_std_streak = 0
        self.fallback_streak = 0
        t = cfg.train
        self.alarm_settings = AlarmSettings(t.alarm_truncation_ratio, t.alarm_zero_std_patience, t.entropy_min, t.entropy_max,
                                            cfg.critic.alarm_fallback_share, cfg.critic.alarm_fallback_patience)
        # Each process chooses refinements for its own groups; the first keeps a single process's stream.
        self.rng = random.Random(f"{cfg.seed}/refine" + (f"/{self.dist.rank}" if self.dist.rank else ""))
        self.minibatch_rng = random.Random(f"{cfg.seed}/minibatch")    # the same in every process
        self.loss_generator = torch.Generator().manual_seed(cfg.seed)
        # Processes sample different prompts; different streams keep their samples independent.
        process_seed = cfg.seed + 7919 * self.dist.rank
        random.seed(process_seed)
        np.random.seed(process_seed)
        torch.manual_seed(process_seed)
        # Critiques from a remote or rule critic are written in a thread while the trainer scores log-probs.
        self.overlap = self.critic is not None and cfg.critic.overlap and cfg.critic.backend in ("rule", "openai")
        self.logger = MetricsLogger(run_dir, cfg)             # metrics.jsonl + log.report_to backends
        self.check_templates()

    def check_templates(self) -> None:
        """Render every template once on a sample so a typo fails before any training."""
        p = self.task.train_batch(0, 1)[0]
        self.prompts.solve(p.question)
        if self.refiner is not None:       # the background refiner checks its own at start-up
            self.refiner.check(p)

    # ------------------------------------------------------------------ rollout
    def sampling(self) -> SamplingParams:
        return rollout_sampling(self.cfg.rollout)

    def collect(self, problems: list, first_group: int = 0) -> Rollout:
        """Sample, verify, critique, refine and mix ``problems``, groups numbered from ``first_group``."""
        cfg = self.cfg
        n = cfg.rollout.num_generations
        timings: dict[str, float] = {}

        t = time.perf_counter()
        solve_prompts = [self.prompts.solve(p.question) for p in problems]
        samples = self.engine.generate(solve_prompts, n, self.sampling())            # [P][n]
        timings["time/sample"] = time.perf_counter() - t

        t = time.perf_counter()
        flat = self.task.reward([p for p in problems for _ in range(n)], [s.text for group in samples for s in group])
        rewards = [flat[g * n:(g + 1) * n] for g in range(len(problems))]             # [P][n]
        timings["time/verify"] = time.perf_counter() - t

        members = [Member(first_group + g, s.prompt_ids, s.completion_ids, r, False, s.logprobs, problem=problems[g])
                   for g in range(len(problems)) for s, r in zip(samples[g], rewards[g])]
        records = [{"question": p.question, "answer": p.answer,
                    "attempts": [{"text": s.text, "reward": r, "member": g * n + i}
                                 for i, (s, r) in enumerate(zip(samples[g], rewards[g]))]}
                   for g, p in enumerate(problems)]
        metrics = self.rollout_metrics(problems, samples, rewards)
        logged = records[:cfg.train.samples_per_step]
        triggered = groups_to_refine(rewards, cfg.refine.refine_trigger) if cfg.method == "critique_grpo" else []
        if self.refiner is not None:
            refined = self.refiner.refine(problems, samples, rewards, triggered,
                                          while_critiquing=(lambda: self.prescore(members)) if self.overlap else None)
            added, rescued = self.mix(refined, [first_group + g for g in range(len(problems))],
                                      samples, rewards, records, len(members))
            members += added
            timings.update(refined.timings)
            metrics.update(refine_metrics([refined], len(triggered), rescued, len(added)))
        elif self.background is not None:
            members, delayed_records, async_metrics = self.refine_in_background(
                problems, samples, rewards, members, records, triggered, first_group)
            logged += delayed_records
            metrics.update(async_metrics)
        metrics.update(timings)
        metrics.update(self.engine.metrics())
        return Rollout(members, metrics, logged)

    def mix(self, refined: Refinements, group_ids: list[int], samples, rewards, records, first_member: int):
        """Choose the refinements that join each refined group (refine.refinements_per_group, correct
        first) as members ``first_member, first_member + 1, ...``; ``group_ids[g]`` is group g's id in
        the batch. Writes each group's refinements into ``records[g]``; returns (members, groups rescued)."""
        cfg = self.cfg
        by_group: dict[int, list[int]] = {}
        for j, (g, _) in enumerate(refined.targets):
            by_group.setdefault(g, []).append(j)
        members, rescued = [], 0
        for g, js in by_group.items():
            chosen = choose_refinements([refined.rewards[j] for j in js], cfg.refine.refinements_per_group,
                                        cfg.refine.refinement_fallback, self.rng)
            solve_ids = samples[g][0].prompt_ids
            member_of = {c: first_member + len(members) + pos for pos, c in enumerate(chosen)}   # batch positions
            for c in chosen:
                j = js[c]
                # Trained as a response to the plain question: the critique is not in its context.
                members.append(Member(group_ids[g], solve_ids, refined.refinements[j].completion_ids,
                                      refined.rewards[j], True))
            if any(refined.rewards[js[c]] > 0 for c in chosen) and all(r <= 0 for r in rewards[g]):
                rescued += 1
            records[g]["refinements"] = [
                {"attempt_index": refined.targets[j][1], "critique": refined.critiques[j].text,
                 "critique_fallback": refined.critiques[j].provenance.get("fallback"), "text": refined.refinements[j].text,
                 **({"critique_noised": refined.critiques[j].provenance["noise"]}
                    if refined.critiques[j].provenance.get("noised") else {}),
                 "reward": refined.rewards[j], "chosen": k in chosen, "member": member_of.get(k)}
                for k, j in enumerate(js)]
        return members, rescued

    def refine_in_background(self, problems, samples, rewards, members: list[Member], records: list[dict],
                             triggered: list[int], first_group: int):
        """refine.mode async: the triggered groups leave this step for the background refiner (with the
        weights that sampled them; their ``records`` say so); the delayed groups due now join as complete
        mixed groups. Returns (members, records of the joining groups, metrics)."""
        self.background.submit(self.step_index, self.model, [
            DelayedGroup(self.step_index, problems[g], samples[g], rewards[g]) for g in triggered])
        leaving = {first_group + g for g in triggered}
        staying = [i for i, m in enumerate(members) if m.group not in leaving]   # all-zero advantages leave
        position = {old: new for new, old in enumerate(staying)}
        for g, record in enumerate(records):
            if first_group + g in leaving:
                record["refined_in_background"] = True
            for attempt in record["attempts"]:
                attempt["member"] = position.get(attempt["member"])
        members = [members[i] for i in staying]
        joining, dropped, waited = self.background.due(self.step_index)
        records, refined, rescued, added = [], [], 0, 0
        next_group = first_group + len(problems)                    # ids after this step's own groups
        for d in joining:
            group = next_group
            next_group += 1
            records.append({"question": d.problem.question, "answer": d.problem.answer,
                            "sampled_at_step": d.step + 1, "refined_with_weights_after_update": d.step,
                            "attempts": [{"text": s.text, "reward": r, "member": len(members) + i}
                                         for i, (s, r) in enumerate(zip(d.samples, d.rewards))]})
            members += [Member(group, s.prompt_ids, s.completion_ids, r, False, s.logprobs, old_logp=logp,
                               old_entropy=entropy, problem=d.problem)
                        for s, r, logp, entropy in zip(d.samples, d.rewards, d.old_logp, d.old_entropy)]
            chosen, saved = self.mix(d.refined, [group], [d.samples], [d.rewards], records[-1:], len(members))
            members += chosen
            refined.append(d.refined)
            rescued += saved
            added += len(chosen)
        metrics = {**refine_metrics(refined, len(triggered), rescued, added),
                   "refine/joined_groups": float(len(joining)),
                   "refine/dropped_late": float(len(dropped)),
                   "refine/pending": float(len(self.background.in_flight) + len(self.background.ready)),
                   "time/refine_wait": waited,
                   "refine/background_seconds": sum(r.timings.get("time/critique", 0.0) + r.timings.get("time/refine", 0.0)
                                                    for r in refined)}
        if joining:
            metrics["refine/lag"] = sum(self.step_index - d.step for d in joining) / len(joining)
        return members, records, metrics

    def rollout_metrics(self, problems, samples, rewards) -> dict[str, float]:
        flat = np.array(rewards, dtype=float)                                             # (P, n)
        labels = np.array([self.task.label(p) for p in problems])
        lengths = [len(s.completion_ids) for group in samples for s in group]
        truncated = [s.truncated for group in samples for s in group]
        return {
            "reward": float(flat.mean()),
            "reward_std": float(flat.std(axis=1).mean()),
            "frac_reward_zero_std": float((flat.std(axis=1) == 0).mean()),
            "frac_all_fail": float((flat.max(axis=1) <= 0).mean()),
            **{f"accuracy/train_{label}": float(flat[labels == label].mean()) for label in sorted(set(labels))},
            "completions/mean_length": float(np.mean(lengths)),
            "completions/clipped_ratio": float(np.mean(truncated)),
        }

    # ------------------------------------------------------------------ update
    def loss_kwargs(self) -> dict:
        L = self.cfg.loss
        return dict(loss_type=L.loss_type, max_completion_length=self.cfg.rollout.max_completion_length,
                    epsilon=L.epsilon, epsilon_high=L.epsilon_high, clip=L.clip, gamma=L.gamma,
                    entropy_coef=L.entropy_coef, beta=L.beta, intervention=L.intervention,
                    clip_cov_ratio=L.clip_cov_ratio, clip_cov_lb=L.clip_cov_lb, clip_cov_ub=L.clip_cov_ub,
                    kl_cov_ratio=L.kl_cov_ratio, kl_cov_coef=L.kl_cov_coef, gppo_dual_clip=L.gppo_dual_clip,
                    top_entropy_quantile=L.top_entropy_quantile, generator=self.loss_generator,
                    entropy_agg=L.entropy_agg, refinement_weight=L.refinement_weight)

    def forward(self, model, members: list[Member]):
        """Token log-probs and entropies of completions: (b, T-1) each, plus the completion mask."""
        input_ids, attention_mask, completion_mask = pad_sequences(
            [m.prompt_ids for m in members], [m.completion_ids for m in members], self.tokenizer.pad_token_id)
        device = self.model.device
        logits = sequence_logits(model, input_ids.to(device), attention_mask.to(device))     # (b, T-1, V)
        logp, entropy = algos.token_logprobs_and_entropy(logits, input_ids[:, 1:].to(device), self.cfg.rollout.temperature)
        return logp, entropy, completion_mask[:, 1:].to(device)

    def microbatches(self, indices: list[int], members: list[Member]) -> list[list[int]]:
        lengths = [len(members[i].prompt_ids) + len(members[i].completion_ids) for i in indices]
        return [[indices[j] for j in mb] for mb in token_budget_microbatches(lengths, self.cfg.train.max_tokens_per_microbatch)]

    @property
    def on_policy(self) -> bool:
        """One optimizer step per rollout batch: the sampling policy is the one being trained."""
        return self.cfg.train.num_iterations == 1 and self.cfg.train.mini_batches == 1

    def prescore(self, members: list[Member]) -> None:
        """Score the log-probs an off-policy update or the KL needs, for members that lack them.

        The sampling policy's forward also keeps each member's token entropies (``old_entropy``):
        the step's entropy metrics describe that policy, not one already moved by a mini-batch."""
        for name, model, needed in (("old_logp", self.model, not self.on_policy),
                                    ("ref_logp", self.reference, self.reference is not None)):
            todo = [m for m in members if needed and getattr(m, name) is None]
            if todo:
                for m, (logp, entropy) in zip(todo, self.score(model, todo)):
                    setattr(m, name, logp)
                    if name == "old_logp":
                        m.old_entropy = entropy

    def score(self, model, members: list[Member]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-member token log-probs and entropies (on the CPU) under ``model`` (old policy or
        reference), computed once per batch."""
        return score_completions(model, [m.prompt_ids for m in members], [m.completion_ids for m in members],
                                 self.tokenizer.pad_token_id, self.cfg.rollout.temperature,
                                 self.cfg.train.max_tokens_per_microbatch)

    def optimize(self, members: list[Member]) -> dict[str, float]:
        cfg = self.cfg
        if not members:     # refine.mode async: every group left for the background and none joined yet
            self.scheduler.step()
            return {"train/empty_update": 1.0, "train/skipped_nonfinite": 0.0, "lr": self.optimizer.param_groups[0]["lr"]}
        rewards = torch.tensor([m.reward for m in members])
        groups = torch.tensor([m.group for m in members])
        advantages = algos.group_advantages(rewards, groups, cfg.loss.scale_rewards, unbiased=cfg.loss.std_unbiased)  # (N,)
        for m, a in zip(members, advantages.tolist()):
            m.advantage = a
        self.prescore(members)
        # Off-policy every member has its sampling policy's log-probs; on-policy only delayed groups do.
        old_logp = [m.old_logp for m in members]
        ref_logp = None if self.reference is None else [m.ref_logp for m in members]

        group_ids = self.dist.union(m.group for m in members)      # every process's groups, in one order
        bounds = [len(group_ids) * k // cfg.train.mini_batches for k in range(cfg.train.mini_batches + 1)]
        stats: dict[str, list[float]] = {}     # this process's shares of the loss and its metrics
        counts: dict[str, float] = {}          # token counts of the first pass, for the padding and mismatch ratios
        grad_norms: list[float] = []           # the same in every process (gradients are summed first)
        skipped = 0
        entropies, masks, refine_flags, logps, advs = [], [], [], [], []
        kinds = []                                 # (b, T-1) token-kind ids beside masks, when the task has kinds
        for iteration in range(cfg.train.num_iterations):
            order = list(group_ids)
            if cfg.train.mini_batches > 1:
                self.minibatch_rng.shuffle(order)
            for k in range(cfg.train.mini_batches):
                mini_groups = set(order[bounds[k]:bounds[k + 1]])
                mini = [i for i, m in enumerate(members) if m.group in mini_groups]
                # Normalisers count the mini-batch over all processes: the summed gradients are the
                # gradient of the loss one process would compute on the whole batch.
                num_sequences = self.dist.sum(float(len(mini)))
                num_tokens = self.dist.sum(float(sum(len(members[i].completion_ids) for i in mini)))
                num_refinements = self.dist.sum(float(sum(members[i].is_refinement for i in mini)))
                self.optimizer.zero_grad(set_to_none=True)
                for mb in self.microbatches(mini, members):
                    batch = [members[i] for i in mb]
                    logp, entropy, mask = self.forward(self.model, batch)                    # (b, T-1)
                    width = logp.shape[1]
                    old = _recorded_or(logp.detach(), [old_logp[i] for i in mb])
                    ref = None if ref_logp is None else _stack([ref_logp[i] for i in mb], width).to(logp.device)
                    is_refinement = torch.tensor([m.is_refinement for m in batch], device=logp.device)
                    sampler_logp = self.sampler_logprobs(batch, mask)                             # (b, T-1) or None
                    if iteration == 0 and sampler_logp is not None:
                        # train/inference mismatch: how far the engine's log-probs are from the trainer's
                        gap = ((old - sampler_logp).abs() * mask * (~is_refinement)[:, None]).sum()
                        _add(counts, mismatch_sum=float(gap), mismatch_tokens=float((mask * (~is_refinement)[:, None]).sum()))
                    tis = None if sampler_logp is None or not cfg.loss.tis_cap else \
                        algos.truncated_is_weight(old, sampler_logp, cfg.loss.tis_cap)
                    loss, metrics = algos.policy_loss(
                        logp, old, advantages[mb].to(logp.device), mask, is_refinement,
                        num_sequences=num_sequences, num_tokens=num_tokens, entropy=entropy, ref_logp=ref,
                        tis_weight=tis, num_refinements=num_refinements, **self.loss_kwargs())
                    loss.backward()
                    # The micro-batch losses add up to the mini-batch loss; the other metrics are means.
                    _accumulate(stats, {"loss": loss.item()}, weight=1.0 / cfg.train.mini_batches)
                    _accumulate(stats, metrics, weight=len(mb) / num_sequences / cfg.train.mini_batches)
                    if iteration == 0:
                        # padding waste of the length-sorted micro-batches: cells computed on pad tokens
                        _add(counts, cells=float(len(mb) * (width + 1)),
                             tokens=float(sum(len(m.prompt_ids) + len(m.completion_ids) for m in batch)))
                        # All of the step's entropy statistics describe the policy that sampled the
                        # batch: off-policy, later mini-batches are trained after an optimizer step, so
                        # they use the sampling policy's forward (old_logp, old_entropy) from prescore.
                        self.keep_token_logprobs(batch, old, mask)
                        entropies.append(_recorded_or(entropy.detach().cpu(), [members[i].old_entropy for i in mb]))
                        masks.append(mask.cpu())
                        kinds.append(self.token_kind_ids(batch, mask.shape[1]))
                        refine_flags.append(is_refinement.cpu())
                        logps.append(old.cpu())
                        advs.append(advantages[mb])
                self.dist.sum_gradients(self.model.parameters())
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
                if torch.isfinite(grad_norm):       # a NaN/inf loss or gradient: skip, never apply
                    self.optimizer.step()
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                grad_norms.append(grad_norm.item())
        # Each process holds its share of the sums; entropy statistics are means of equal shares.
        metrics = {k: v / cfg.train.num_iterations for k, v in self.dist.sum_metrics({k: sum(v) for k, v in stats.items()}).items()}
        metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        counts = self.dist.sum_metrics(counts)
        metrics["train/padding_frac"] = 1.0 - counts["tokens"] / max(counts["cells"], 1.0)
        if "mismatch_sum" in counts:
            metrics["rollout/logp_mismatch"] = counts["mismatch_sum"] / max(counts["mismatch_tokens"], 1.0)
        metrics.update(self.dist.combine_metrics(self.entropy_metrics(entropies, masks, refine_flags, logps, advs,
                                                                      kinds, self.task_kind_names())))
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["train/skipped_nonfinite"] = float(skipped)
        self.scheduler.step()
        return metrics

    def sampler_logprobs(self, batch: list[Member], mask: torch.Tensor) -> torch.Tensor | None:
        """The engine's sampling log-probs placed on the completion positions of ``mask`` (b, T-1);
        None unless every initial sample of the micro-batch has them (refinement rows stay 0: they are
        trained without a ratio)."""
        if not batch or any(m.rollout_logprobs is None for m in batch if not m.is_refinement):
            return None
        out = torch.zeros_like(mask, dtype=torch.float32)
        for row, m in enumerate(batch):
            if not m.is_refinement:
                out[row, mask[row] > 0] = torch.tensor(m.rollout_logprobs, dtype=torch.float32, device=mask.device)
        return out

    def task_kind_names(self) -> tuple[str, ...]:
        """The task's token kinds (entropy/kind/*); () when it defines none."""
        return tuple(getattr(self.task, "TOKEN_KINDS", ()))

    def token_kind_ids(self, batch: list[Member], width: int) -> torch.Tensor | None:
        """Token-kind ids (b, width) aligned with ``forward``'s (b, T-1) tensors: completion token j of
        a row sits at position len(prompt) - 1 + j. Refinements (and members without a problem) stay 0,
        outside the initial mask; None when the task has no token kinds."""
        names = self.task_kind_names()
        if not names:
            return None
        index = {name: i for i, name in enumerate(names)}
        out = torch.zeros((len(batch), width), dtype=torch.long)
        for row, m in enumerate(batch):
            if m.is_refinement or m.problem is None:
                continue
            texts = self.tokenizer.batch_decode([[t] for t in m.completion_ids], skip_special_tokens=True)
            found = self.task.token_kinds(m.problem, texts)
            if found is None:
                return None
            for j, name in enumerate(found):
                pos = len(m.prompt_ids) - 1 + j
                if 0 <= pos < width:
                    out[row, pos] = index[name]
        return out

    def keep_token_logprobs(self, batch: list[Member], logp: torch.Tensor, mask: torch.Tensor) -> None:
        """Keep the sampling policy's log-probs (the ratio's denominator; on-policy the trained ones) of
        the members of groups logged to samples.jsonl (for `inspect`)."""
        for row, m in enumerate(batch):
            if m.group < self.cfg.train.samples_per_step:
                m.token_logprobs = [round(x, 5) for x in logp[row][mask[row] > 0].cpu().tolist()]

    def training_view(self, rollout: Rollout) -> list[dict]:
        """The logged groups with what the update saw: each member's advantage, tokens and log-probs."""
        def view(record: dict) -> dict:
            index = record.get("member")
            if index is None:
                return record
            m = rollout.members[index]
            return {**record, "advantage": m.advantage, "tokens": [self.tokenizer.decode([t]) for t in m.completion_ids],
                    "token_logprobs": m.token_logprobs}
        return [{**g, "attempts": [view(a) for a in g["attempts"]],
                 **({"refinements": [view(r) for r in g["refinements"]]} if "refinements" in g else {})}
                for g in rollout.samples]

    @staticmethod
    def entropy_metrics(entropies, masks, refine_flags, logps, advs, kinds=None, kind_names=()) -> dict[str, float]:
        """Entropy statistics of the initial samples (plus the refinements' token mean); with ``kinds``,
        (b, T-1) kind ids beside ``masks`` indexing ``kind_names`` (None when the task has none), also
        entropy/kind*/<kind> (algos.entropy_by_kind)."""
        width = max(e.shape[1] for e in entropies)
        entropy = torch.cat([_pad(e, width) for e in entropies])
        mask = torch.cat([_pad(m, width) for m in masks])
        logp = torch.cat([_pad(x, width) for x in logps])
        refined = torch.cat(refine_flags)
        adv = torch.cat(advs)
        initial_mask = mask * (~refined).float()[:, None]
        out = algos.entropy_stats(entropy, initial_mask)
        out["entropy"] = out["entropy/token_mean"]
        out["entropy/refine_token_mean"] = algos.entropy_stats(entropy, mask * refined.float()[:, None])["entropy/token_mean"]
        out["entropy/cov_logp_adv"] = algos.logp_advantage_cov(logp, adv, initial_mask)
        if kind_names and kinds and all(k is not None for k in kinds):
            kind = torch.cat([_pad(k, width) for k in kinds])
            out.update(algos.entropy_by_kind(entropy, initial_mask, kind, kind_names))
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, final: bool = False) -> dict[str, float]:
        cfg, reward = self.cfg, self.task.reward
        max_len = cfg.rollout.max_completion_length
        params = SamplingParams(max_len, cfg.eval.temperature, 1.0)
        n, k = cfg.eval.pass_n, cfg.eval.pass_k
        out = {}
        for name, all_problems in self.task.eval_sets().items():
            problems = all_problems[self.dist.rank::self.dist.world_size]       # each process scores a share
            share = len(problems) / len(all_problems)
            prompts = [self.prompts.solve(p.question) for p in problems]
            out[f"eval/{name}_pass1"] = self.dist.sum(share * greedy_pass1(self.engine, prompts, problems, reward, max_len))
            if final:       # pass@k at k = 1, 2, 4, 8, 16 up to n and at eval.pass_k, from the same n samples
                sampled = sampled_pass_at_ks(self.engine, prompts, problems, reward, n, pass_ks(n, k), params)
                for kk, value in sampled.items():
                    out[f"eval/{name}_pass@{kk}"] = self.dist.sum(share * value)
        if cfg.eval.probe_prompts:
            out["entropy/probe"] = self.probe_entropy()
        return out

    @torch.no_grad()
    def probe_entropy(self) -> float:
        """Mean token entropy of greedy completions of fixed held-out prompts.

        Greedy decoding draws no random numbers, so the value depends on the weights alone and
        runs can be compared at equal steps whatever they sampled for training.
        """
        prompts = [self.prompts.solve(p.question) for p in self.task.probe_problems(self.cfg.eval.probe_prompts)]
        outs = self.engine.generate(prompts, 1, SamplingParams(self.cfg.rollout.max_completion_length, greedy=True))
        members = [Member(0, o[0].prompt_ids, o[0].completion_ids, 0.0, False) for o in outs]
        total, count = 0.0, 0.0
        for mb in self.microbatches(list(range(len(members))), members):
            _, entropy, mask = self.forward(self.model, [members[i] for i in mb])
            total += float((entropy * mask).sum())
            count += float(mask.sum())
        return total / max(count, 1.0)

    # ------------------------------------------------------------------ the loop
    def step(self) -> dict[str, float]:
        problems, first_group = self.dist.shard(self.task.train_batch(self.step_index, self.cfg.train.prompts_per_step))
        try:
            rollout = self.collect(problems, first_group)      # sample, verify, critique, refine, mix
        except RuntimeError as err:
            if "probability tensor contains" not in str(err):
                raise
            raise NonFiniteLoss(
                f"step {self.step_index + 1}: the policy's next-token probabilities are not finite (its weights "
                f"diverged); lower train.learning_rate and {self.recovery_hint()}") from None
        t = time.perf_counter()
        metrics = {**self.dist.combine_metrics(rollout.metrics), **self.optimize(rollout.members)}
        metrics["time/train"] = time.perf_counter() - t
        # Cov(log pi, A) of step t predicts the entropy change seen at step t+1 (Cui et al.).
        if self.previous_entropy is not None and "entropy" in metrics:
            metrics["entropy/delta"] = metrics["entropy"] - self.previous_entropy
        self.previous_entropy = metrics.get("entropy", self.previous_entropy)
        self.step_index += 1
        self.engine.sync_weights(self.step_index)              # engines with their own copy of the weights
        if self.dist.is_main:
            self.logger.samples(self.step_index, self.training_view(rollout))
        return metrics

    def train(self) -> dict[str, float]:
        """Train to ``train.steps`` and evaluate; the metric backends and the background refiner are
        closed however it ends."""
        try:
            final = self._train()
            if self.dist.is_main:
                self.logger.log_final(final)
        except BaseException as err:
            self.close()
            self.logger.close(err)
            raise
        self.close()
        self.logger.close()
        return final

    def close(self) -> None:
        """Stop the background refiner (refine.mode async); groups still pending are not trained."""
        if self.background is not None:
            self.background.close()

    def _train(self) -> dict[str, float]:
        cfg = self.cfg
        with GracefulStop() as stop:
            if self.step_index == 0:
                step0 = {"step": 0, **self.evaluate_or_stop(stop), **self.dist.sum_metrics(self.task.metrics())}
                if self.dist.is_main:
                    self.logger.log(step0)
            bar = tqdm(total=cfg.train.steps, initial=self.step_index, desc=f"{cfg.method}",
                       disable=None if self.show_progress else True, mininterval=2.0)
            while self.step_index < cfg.train.steps:
                t = time.perf_counter()
                metrics = self.step()
                metrics["time/step"] = time.perf_counter() - t
                if cfg.eval.every and self.step_index % cfg.eval.every == 0:
                    metrics.update(self.evaluate())
                metrics.update(self.dist.sum_metrics(self.task.metrics()))     # this step's verifier/* counters
                metrics["step"] = self.step_index
                halt = self.watch(metrics)
                if self.dist.is_main:
                    self.logger.log(metrics)
                bar.update(1)
                if self.show_progress:
                    bar.write(one_line_summary(metrics))
                if self.step_index % cfg.train.save_every == 0 or self.step_index == cfg.train.steps or stop.signal or halt:
                    self.save()
                if stop.signal:
                    raise TrainingInterrupted(
                        f"stopped after step {self.step_index}; checkpoint saved. Resume with: "
                        f"critique-rl train --resume {self.run_dir}", stop.exit_code)
                if halt:
                    raise TrainingInterrupted(
                        f"stopped after step {self.step_index}: {halt}; checkpoint saved. Resume with: "
                        f"critique-rl train --resume {self.run_dir}", ALARM_EXIT_CODE)
                if self.bad_steps >= cfg.train.max_bad_steps:
                    raise NonFiniteLoss(
                        f"{self.bad_steps} steps in a row (up to step {self.step_index}) had a NaN or inf loss or "
                        f"gradient and were skipped (train.max_bad_steps = {cfg.train.max_bad_steps}); lower "
                        f"train.learning_rate or check the reward, and {self.recovery_hint()}")
            bar.close()
            final = {**self.evaluate_or_stop(stop, final=True), "step": self.step_index}
        return final

    def evaluate_or_stop(self, stop: GracefulStop, final: bool = False) -> dict[str, float]:
        """The evaluation before step 1 or the final one, abandoned at once by SIGINT/SIGTERM: a resume
        redoes it (the last checkpoint is written before the final one). TrainingInterrupted says how."""
        name, saved = ((f"final evaluation after step {self.step_index}", "checkpoint saved") if final
                       else ("evaluation before step 1", "nothing to save yet"))
        if self.show_progress:
            tqdm.write(name)
        try:
            if stop.signal is None:
                with stop.at_once():
                    return self.evaluate(final)
        except KeyboardInterrupt:
            if stop.signal is None:     # a KeyboardInterrupt of another origin
                raise
        raise TrainingInterrupted(f"stopped during the {name}; {saved}. Resume with: critique-rl train --resume {self.run_dir}",
                                  stop.exit_code)

    def watch(self, metrics: dict) -> str | None:
        """Count skipped non-finite steps and raise the silent-failure alarms, in the log and the metrics.

        Returns why the run must stop (an alarm configured to stop it), else None."""
        self.bad_steps = self.bad_steps + 1 if metrics["train/skipped_nonfinite"] else 0
        if self.bad_steps:
            tqdm.write(f"warning: step {metrics['step']}: non-finite loss or gradient, optimizer step skipped")
        self.zero_std_streak = self.zero_std_streak + 1 if metrics["frac_reward_zero_std"] >= 1.0 else 0
        self.fallback_streak = fallback_streak(metrics, self.fallback_streak, self.alarm_settings)
        halt = None
        for name in check_alarms(metrics, self.zero_std_streak, self.alarm_settings, self.fallback_streak):
            metrics[f"alarm/{name}"] = 1.0
            message = describe_alarm(name, metrics, self.alarm_settings)
            tqdm.write(f"warning: step {metrics['step']}: {message}")
            if name == "critic_fallbacks" and self.cfg.critic.alarm_fallback_stop:
                halt = f"alarm {name} (critic.alarm_fallback_stop): {message}"
        return halt

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        state = {"step": self.step_index, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(), "refine_rng": self.rng.getstate(), "minibatch_rng": self.minibatch_rng.getstate(),
                 "previous_entropy": self.previous_entropy,
                 "loss_generator": self.loss_generator.get_state(), "bad_steps": self.bad_steps,
                 "zero_std_streak": self.zero_std_streak, "fallback_streak": self.fallback_streak}
        if self.background is not None:    # the groups still to join, complete: a resume continues with them
            self.background.drain()
            state["delayed_groups"] = self.background.ready
        if not self.dist.is_main:       # the processes hold the same weights; one writes them
            return self.run_dir / "checkpoints"
        return save_checkpoint(self.run_dir, self.step_index, self.model, self.tokenizer, state, self.cfg.train.keep_last)

    def recovery_hint(self) -> str:
        """Where a stopped run continues from, for error messages: there may be no checkpoint yet."""
        path = latest_checkpoint(self.run_dir)
        start = f"its last checkpoint {path.name}" if path else "step 0 (no checkpoint yet)"
        return f"continue from {start} with: critique-rl train --resume {self.run_dir} train.learning_rate=..."

    def resume(self) -> int:
        """Continue from the newest complete checkpoint; returns its step.

        Newer broken checkpoints are passed over with a warning; CheckpointError when all are broken.
        A run stopped before its first checkpoint starts over (returns 0): its log is dropped, so the
        run directory never blocks both ``--resume`` and a new ``--out``.
        """
        path, warning = resume_point(self.run_dir)
        if warning and self.dist.is_main:
            print(warning, file=sys.stderr, flush=True)
        if path is None:
            if self.dist.is_main:
                self.logger.truncate_after(-1)
            return 0
        load_trained_weights(self.model, path, self.cfg.model)
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_index = state["step"]
        self.rng.setstate(state["refine_rng"])
        if "minibatch_rng" in state:
            self.minibatch_rng.setstate(state["minibatch_rng"])
        self.previous_entropy = state.get("previous_entropy")
        # Streaks spanning the interruption still stop the run and raise the alarm at the same step.
        self.bad_steps = state.get("bad_steps", 0)
        self.zero_std_streak = state.get("zero_std_streak", 0)
        self.fallback_streak = state.get("fallback_streak", 0)
        self.loss_generator.set_state(state["loss_generator"])
        if self.background is not None:
            self.background.ready = list(state.get("delayed_groups", []))
        restore_rng(state["rng"])
        if self.dist.rank:      # the checkpoint holds the first process's streams; the others must differ
            torch.manual_seed(self.cfg.seed + 7919 * self.dist.rank + self.step_index)
        if self.dist.is_main:
            self.logger.truncate_after(self.step_index)
        return self.step_index


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


def _recorded_or(current: torch.Tensor, recorded: list[torch.Tensor | None]) -> torch.Tensor:
    """``current`` (b, T-1) with the rows that have a recorded tensor (scored under the sampling policy:
    off-policy updates, delayed groups) replaced by it, cut or zero-padded to the width."""
    if all(r is None for r in recorded):
        return current
    width = current.shape[1]
    return torch.stack([current[row] if r is None else _stack([r], width)[0].to(current.device)
                        for row, r in enumerate(recorded)])


def _stack(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Rows scored in other micro-batches, cut or zero-padded to this micro-batch's width."""
    return torch.stack([torch.nn.functional.pad(r, (0, max(0, width - r.shape[0])))[:width] for r in rows])


def _accumulate(stats: dict[str, list[float]], values: dict[str, float], weight: float) -> None:
    for k, v in values.items():
        stats.setdefault(k, []).append(v * weight)


def _add(counts: dict[str, float], **values: float) -> None:
    for k, v in values.items():
        counts[k] = counts.get(k, 0.0) + v
