"""Critique and refine: failed attempts -> critiques -> refinements, scored by the verifier.

``Refiner`` is the step's critique -> refine phase, the same whether it runs inside the step
(``refine.mode: sync``, the paper) or off the critical path (``refine.mode: async``), where
``BackgroundRefiner`` runs it in a separate process on a copy of the weights that sampled the group.

Why async is sound: an all-fail group has zero advantage in the step that sampled it, so it adds
nothing to that update; its refinements are trained off-policy anyway (shaping, no ratio). So the
step trains at once on the groups that have signal, and a triggered group joins a later update as
a complete mixed group: its initial samples with the log-probs they were sampled with (scored here,
under the same weights; PPO-clip handles the lag), its refinements with shaping.

    step t:   sample+verify ──> groups with signal ─────> update t
                            └─> triggered groups ─> [background: critique, refine, score] ─┐
    step t+1: sample+verify ──> groups with signal + the delayed groups of step t ─> update t+1

A group sampled at step s may join the updates of steps s+1 .. s+max_lag. ``late: wait`` waits for
it at step s+max_lag if it is not ready by then (with max_lag 1 every group joins the next update,
so a run is reproducible and resumes exactly); ``late: drop`` never waits and drops it (counted).
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
import traceback
from typing import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from critique_rl.batching import pad_sequences, sequence_logits, token_budget_microbatches
from critique_rl.config import Config, ConfigError
from critique_rl.critics import CritiqueRequest, build_critic
from critique_rl.critics.base import critic_reference
from critique_rl.refine import attempts_to_critique, groups_to_refine
from critique_rl.rollout import build_engine, rollout_sampling
from critique_rl.rollout.base import Completion
from critique_rl.templates import PolicyPrompts


@dataclass
class Refinements:
    """The critique -> refine phase's output for some groups of one batch; index j runs over targets."""

    targets: list[tuple[int, int]]        # (group index in the batch, attempt index) critiqued and refined
    critiques: list                       # Critique per target
    refinements: list[Completion]         # one per target
    rewards: list[float]                  # verifier reward of each refinement
    too_long_targets: list[tuple[int, int]] = field(default_factory=list)   # refine prompt > refine.max_prompt_tokens
    timings: dict[str, float] = field(default_factory=dict)
    critic_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def too_long(self) -> int:
        return len(self.too_long_targets)

    def of_group(self, g: int, totals: bool) -> Refinements:
        """Group ``g``'s share, renumbered as group 0; ``totals``: it also carries the batch's timings
        and critic counters (give them to one group, so that sums over groups stay right)."""
        js = [j for j, (group, _) in enumerate(self.targets) if group == g]
        return Refinements([(0, self.targets[j][1]) for j in js], [self.critiques[j] for j in js],
                           [self.refinements[j] for j in js], [self.rewards[j] for j in js],
                           [(0, i) for group, i in self.too_long_targets if group == g],
                           dict(self.timings) if totals else {}, dict(self.critic_metrics) if totals else {})


class Refiner:
    """Critiques failed attempts with the configured critic and lets the policy refine them."""

    def __init__(self, cfg: Config, task, prompts: PolicyPrompts, engine, tokenizer, critic):
        self.cfg, self.task, self.prompts, self.engine, self.tokenizer, self.critic = (
            cfg, task, prompts, engine, tokenizer, critic)

    def check(self, problem) -> None:
        """Critique the task's worked solution of ``problem`` and render its refine prompt, so a template
        typo fails before any training."""
        solution = self.task.reference_solution(problem)
        [c] = self.critic.critique([CritiqueRequest(problem.question, solution, str(problem.answer), True, problem)])
        self.prompts.refine(problem.question, solution, c.text)
        self.critic.metrics()   # the start-up check is not part of the first step's critic counters

    def refine(self, problems: list, samples: list[list[Completion]], rewards: list[list[float]],
               groups: list[int], while_critiquing=None) -> Refinements:
        """Critique the attempts of ``groups`` chosen by refine.refine_trigger and max_critiques_per_group,
        and generate one refinement per critique. ``while_critiquing()``, when given, runs while the
        critiques are written (in a thread, for critics that wait on I/O or cost little CPU)."""
        cfg = self.cfg.refine
        targets = [(g, i) for g in groups
                   for i in attempts_to_critique(rewards[g], cfg.refine_trigger, cfg.max_critiques_per_group)]
        timings: dict[str, float] = {}

        t = time.perf_counter()
        requests = [CritiqueRequest(problems[g].question, samples[g][i].text,
                                    critic_reference(self.cfg.critic, self.task, problems[g]),
                                    rewards[g][i] > 0, problems[g]) for g, i in targets]
        if while_critiquing is not None:
            pending = in_background(self.critic.critique, requests)
            while_critiquing()
            waited = time.perf_counter()
            critiques = pending()
            timings["time/critique_wait"] = time.perf_counter() - waited
        else:
            critiques = self.critic.critique(requests)
        timings["time/critique"] = time.perf_counter() - t

        t = time.perf_counter()
        refine_prompts = [self.prompts.refine(r.question, r.attempt, c.text) for r, c in zip(requests, critiques)]
        too_long = []
        if cfg.max_prompt_tokens and refine_prompts:
            fits = [len(ids) <= cfg.max_prompt_tokens
                    for ids in self.tokenizer(refine_prompts, add_special_tokens=False)["input_ids"]]
            too_long = [t for t, ok in zip(targets, fits) if not ok]
            targets, critiques, refine_prompts = (
                [x for x, ok in zip(seq, fits) if ok] for seq in (targets, critiques, refine_prompts))
        refinements = [o[0] for o in self.engine.generate(refine_prompts, 1, rollout_sampling(self.cfg.rollout))]
        refine_rewards = self.task.reward([problems[g] for g, _ in targets], [r.text for r in refinements])
        timings["time/refine"] = time.perf_counter() - t
        return Refinements(targets, critiques, refinements, refine_rewards, too_long, timings, self.critic.metrics())


def refine_metrics(refined: list[Refinements], triggered: int, rescued: int, added: int) -> dict[str, float]:
    """A step's refine/* and critic/* metrics over the Refinements that joined its update; counters add
    up, critic latency percentiles are the worst of them."""
    metrics = {
        "refine/triggered_groups": float(triggered),
        "refine/critiques": float(sum(len(r.targets) + r.too_long for r in refined)),
        "refine/too_long": float(sum(r.too_long for r in refined)),
        "refine/groups_rescued": float(rescued),
        "refine/added": float(added),
    }
    for r in refined:
        for key, value in r.critic_metrics.items():
            metrics[key] = max(metrics.get(key, value), value) if "latency" in key else metrics.get(key, 0.0) + value
    rewards = [x for r in refined for x in r.rewards]
    if rewards:      # a step without refinements has no success rate (not 0: that read as a collapse)
        metrics["refine/success_rate"] = sum(rewards) / len(rewards)
    return metrics


@torch.no_grad()
def score_completions(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                      temperature: float, max_tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-sequence token log-probs and entropies (CPU, (T-1,) each, aligned with ``pad_sequences``'
    shifted positions) under ``model``, in token-budgeted micro-batches."""
    from critique_rl.algos import token_logprobs_and_entropy

    out: list[tuple[torch.Tensor, torch.Tensor]] = [(torch.empty(0), torch.empty(0))] * len(prompt_ids)
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
    for mb in token_budget_microbatches(lengths, max_tokens):
        input_ids, attention_mask, _ = pad_sequences([prompt_ids[i] for i in mb], [completion_ids[i] for i in mb], pad_id)
        device = next(model.parameters()).device
        logits = sequence_logits(model, input_ids.to(device), attention_mask.to(device))          # (b, T-1, V)
        logp, entropy = token_logprobs_and_entropy(logits, input_ids[:, 1:].to(device), temperature)
        for row, i in enumerate(mb):
            out[i] = (logp[row].cpu(), entropy[row].cpu())
    return out


# ---------------------------------------------------------------------------- off the critical path
@dataclass
class DelayedGroup:
    """A triggered group refined in the background, waiting to join an update."""

    step: int                             # the step that sampled it (0-based); its weights refined it
    problem: object
    samples: list[Completion]             # the group's initial samples
    rewards: list[float]
    old_logp: list[torch.Tensor] | None = None      # per sample, under the weights that sampled it
    old_entropy: list[torch.Tensor] | None = None
    refined: Refinements | None = None    # targets' group index is 0 (this group)


def check_async(cfg: Config, world_size: int) -> None:
    """refine.mode: async runs one background process beside one trainer on the hf engine."""
    if cfg.refine.mode != "async" or cfg.method != "critique_grpo":
        return
    if world_size > 1:
        raise ConfigError(f"refine.mode: async runs beside a single trainer process; this run has {world_size} "
                          f"(use refine.mode: sync with several processes)")
    if cfg.rollout.engine != "hf":
        raise ConfigError(f"refine.mode: async refines with its own copy of the policy on the hf engine; "
                          f"rollout.engine is {cfg.rollout.engine!r} (use refine.mode: sync with it)")


def _failure(err: BaseException) -> tuple[str, object]:
    """An error for the trainer: the exception itself when it pickles (a ConfigError or a template error
    keeps its clear message), else its text; with the traceback for what is not a user error."""
    try:
        pickle.dumps(err)
        return ("error", (err, traceback.format_exc()))
    except Exception:  # noqa: BLE001 - an exception that does not pickle is sent as text
        return ("error", (None, traceback.format_exc()))


def _serve(cfg: Config, run_dir: str, jobs, results, trainer_step) -> None:
    """The background process: build the refiner once, then answer jobs in order until None. With
    refine.late drop, a job already past max_lag when it comes up is returned unrefined (dropped)."""
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: they are the trainer's, which
    # drains this process into its checkpoint and then stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trainer = os.getppid()
    try:
        from critique_rl.modeling import load_policy
        from critique_rl.tasks import build_task

        torch.set_num_threads(cfg.refine.async_threads)
        model, tokenizer = load_policy(cfg.model.name_or_path, cfg.model)
        model.eval()
        task = build_task(cfg)
        critic = build_critic(cfg.critic, task.name, policy=(model, tokenizer), run_dir=Path(run_dir), seed=cfg.seed)
        refiner = Refiner(cfg, task, PolicyPrompts(cfg.prompts, tokenizer), build_engine(cfg.rollout, model, tokenizer, run_dir),
                          tokenizer, critic)
        refiner.check(task.train_batch(0, 1)[0])
        results.put(("ready", None))
    except BaseException as err:  # noqa: BLE001 - reported to the trainer, which raises it
        results.put(_failure(err))
        return
    while (job := _next_job(jobs, trainer)) is not None:
        step, weights, groups = job
        if cfg.refine.late == "drop" and trainer_step.value - step > cfg.refine.max_lag:
            results.put(("done", (step, groups)))       # too stale to join any update: not worth refining
            continue
        try:
            model.load_state_dict(weights)
            # Sampling depends on the weights and the step alone, not on when the job ran.
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            # One batch for the whole step, as inside the step: generation is batched across its groups.
            refined = refiner.refine([g.problem for g in groups], [g.samples for g in groups],
                                     [g.rewards for g in groups], list(range(len(groups))))
            scored = iter(score_completions(model, [s.prompt_ids for g in groups for s in g.samples],
                                            [s.completion_ids for g in groups for s in g.samples],
                                            tokenizer.pad_token_id, cfg.rollout.temperature,
                                            cfg.train.max_tokens_per_microbatch))
            for k, group in enumerate(groups):
                group.refined = refined.of_group(k, totals=k == 0)
                group.old_logp, group.old_entropy = map(list, zip(*(next(scored) for _ in group.samples)))
            results.put(("done", (step, groups)))
        except BaseException as err:  # noqa: BLE001
            results.put(_failure(err))
            return


def _next_job(jobs, trainer: int):
    """The next job, or None when told to stop or when the trainer process is gone (killed)."""
    import queue

    while os.getppid() == trainer:
        try:
            return jobs.get(timeout=2.0)
        except queue.Empty:
            continue
    return None


class BackgroundRefiner:
    """One process that critiques and refines triggered groups while the trainer goes on.

    ``submit`` hands it a step's groups with that step's weights; ``due(step)`` returns the groups
    that join the update of ``step`` and those dropped as too stale; ``drain`` waits for everything
    submitted (before a checkpoint); ``close`` stops the process."""

    def __init__(self, cfg: Config, run_dir: Path):
        import torch.multiprocessing as mp

        self.cfg = cfg
        context = mp.get_context("spawn")     # a fork would copy the trainer's threads and locks
        self.jobs, self.results = context.Queue(), context.Queue()
        self.trainer_step = context.Value("i", 0)       # the step the trainer is at, for late: drop
        self.process = context.Process(target=_serve, args=(cfg, str(run_dir), self.jobs, self.results, self.trainer_step),
                                       name="critique-rl-refiner", daemon=True)
        self.process.start()
        self.in_flight: list[int] = []        # steps submitted and not returned, in order
        self.ready: list[DelayedGroup] = []   # returned, not yet joined
        self._receive(wait=True, expect="ready")

    def _receive(self, wait: bool, expect: str = "done") -> bool:
        """Take one message (blocking with ``wait``); False when none was there."""
        import queue

        while True:
            try:
                kind, payload = self.results.get(timeout=1.0) if wait else self.results.get_nowait()
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise RuntimeError(f"the background refiner (refine.mode: async) exited with code "
                                       f"{self.process.exitcode} without an answer") from None
                if not wait:
                    return False
        if kind == "error":
            err, trace = payload
            if isinstance(err, (ConfigError, ValueError, FileNotFoundError)):
                err.add_note("(raised in the background refiner, refine.mode: async)")
                raise err       # a user error (a template, a setting, a file): its own message, as in sync mode
            raise RuntimeError(f"the background refiner (refine.mode: async) failed:\n{trace}")
        if kind != expect:
            raise RuntimeError(f"the background refiner sent {kind!r} where {expect!r} was expected")
        if kind == "done":
            step, groups = payload
            self.in_flight.remove(step)
            self.ready.extend(groups)
        return True

    def submit(self, step: int, model, groups: list[DelayedGroup]) -> None:
        if not groups:
            return
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.in_flight.append(step)
        self.jobs.put((step, weights, groups))

    def due(self, step: int) -> tuple[list[DelayedGroup], list[DelayedGroup], float]:
        """(joining, dropped, seconds waited) for the update of ``step`` (0-based): every ready group
        sampled before it, after waiting (late: wait) for those sampled max_lag steps before; ready
        groups older than that are dropped (late: drop)."""
        max_lag, late = self.cfg.refine.max_lag, self.cfg.refine.late
        self.trainer_step.value = step
        while self._receive(wait=False):
            pass
        waited = 0.0
        if late == "wait" and any(s <= step - max_lag for s in self.in_flight):
            t = time.perf_counter()
            while any(s <= step - max_lag for s in self.in_flight):
                self._receive(wait=True)
            waited = time.perf_counter() - t
        eligible = [g for g in self.ready if g.step < step]
        self.ready = [g for g in self.ready if g.step >= step]
        joining = [g for g in eligible if step - g.step <= max_lag and g.refined is not None]
        dropped = [g for g in eligible if step - g.step > max_lag or g.refined is None]
        return joining, dropped, waited

    def drain(self) -> None:
        """Wait until every submitted group is back (their results go into a checkpoint)."""
        while self.in_flight:
            self._receive(wait=True)

    def close(self) -> None:
        if self.process.is_alive():
            self.jobs.put(None)
            self.process.join(timeout=10)
            if self.process.is_alive():
                self.process.kill()


def in_background(fn: Callable, *args) -> Callable:
    """Start ``fn(*args)`` in a daemon thread; the returned function waits for its result (or raises
    its exception). Daemon, so a second Ctrl-C exits at once even while a critic request hangs."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name="critic", daemon=True)
    thread.start()

    def wait():
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
    return wait
