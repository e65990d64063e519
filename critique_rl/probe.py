"""``critique-rl probe``: can the policy use a critique of a problem it persistently fails?

The paper's first experiment as a command:

1. Candidates are training problems (the task's hard and easy training distribution, never an
   evaluation split), drawn with the config's seed.
2. The policy samples ``k`` completions of each at the rollout temperature; a candidate with 0
   of ``k`` correct is a *persistent failure*. Up to ``problems`` of them are kept, in the order
   they were drawn, each with one failed attempt (its first sample).
3. Each critic writes a critique of every kept attempt in each critique kind (indicative,
   ground_truth, cot). The rule critic renders all three from its templates; a model critic
   (hf, openai, self) writes cot with its model and renders the other two.
4. The policy refines each attempt from its critique (the policy's refine template), ``refinements``
   samples at the rollout temperature, and the verifier scores them.

Per critic and kind: ``attempts`` (failed attempts critiqued), ``solved`` (attempts with at
least one correct refinement), ``share`` (solved / attempts), ``refinements`` and ``correct``
(refinements sampled and correct), ``fallbacks`` (model critics: critiques replaced by the
fallback critique; null for the rule critic) and ``noised`` (cot critiques of a rule critic with
critic.noise: critiques noised on purpose; else null).

The selection and the table/JSON formatting are pure functions; ``run_probe`` does the model I/O.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from critique_rl.config import Config, ConfigError, CriticConfig, config_from_dict, read_yaml_file

KINDS = ("indicative", "ground_truth", "cot")
JSON_PREFIX = "probe-json: "


# ---------------------------------------------------------------------------- pure functions
def persistent_failures(rewards: Sequence[Sequence[float]], limit: int) -> list[int]:
    """Indices of the candidates none of whose samples is correct (reward > 0), the first ``limit``.

    >>> persistent_failures([[0, 0], [1, 0], [0.0, 0.0], [0, 0]], 2)
    [0, 2]
    """
    return [i for i, r in enumerate(rewards) if r and not any(x > 0 for x in r)][:limit]


def probe_row(critic: str, backend: str, kind: str, refine_rewards: Sequence[Sequence[float]],
              fallbacks: int | None = None, noised: int | None = None) -> dict[str, Any]:
    """One row of the result: ``refine_rewards`` holds each attempt's refinements' rewards.

    >>> probe_row("rule", "rule", "cot", [[1.0], [0.0], [0.0, 1.0]])["solved"]
    2
    """
    attempts = len(refine_rewards)
    solved = sum(any(r > 0 for r in rs) for rs in refine_rewards)
    return {"critic": critic, "backend": backend, "kind": kind, "attempts": attempts, "solved": solved,
            "share": solved / attempts if attempts else None,
            "refinements": sum(len(rs) for rs in refine_rewards),
            "correct": sum(r > 0 for rs in refine_rewards for r in rs),
            "fallbacks": fallbacks, "noised": noised}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def format_table(result: dict[str, Any]) -> str:
    """The result as a heading line and a Markdown table, one row per critic and critique kind."""
    rows = result["rows"]
    several = result.get("refinements_per_attempt", 1) > 1
    noise = any(r.get("noised") is not None for r in rows)
    head = ["critic", "backend", "kind", "attempts", "solved", "share solved"]
    head += ["correct refinements"] if several else []
    head += ["fallbacks"] + (["noised"] if noise else [])
    lines = [f"persistent failures: {result['problems']} of {result['candidates']} candidates had 0 of "
             f"{result['k']} correct (asked for {result['requested_problems']}); "
             f"{result['refinements_per_attempt']} refinement(s) per critique at temperature {result['temperature']}",
             "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["critic"], r["backend"], r["kind"], r["attempts"], r["solved"], r["share"]]
        cells += [f"{r['correct']}/{r['refinements']}"] if several else []
        cells += [r["fallbacks"]] + ([r["noised"]] if noise else [])
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def json_line(result: dict[str, Any]) -> str:
    """The result as one greppable line: ``probe-json: {...}``."""
    return JSON_PREFIX + json.dumps(result, sort_keys=False)


def critic_labels(paths: Sequence[str]) -> list[str]:
    """Names of the critics in the table: each --critic file's stem, numbered where two share one.

    >>> critic_labels(["examples/critic_hf.yaml", "a/critic_hf.yaml", "b/noisy.yaml"])
    ['critic_hf', 'critic_hf#2', 'noisy']
    """
    out = []
    for path in paths:
        stem = Path(path).stem
        n = sum(Path(p).stem == stem for p in paths[:len(out)])
        out.append(stem if n == 0 else f"{stem}#{n + 1}")
    return out


def kind_config(cfg: CriticConfig, kind: str) -> CriticConfig:
    """``cfg`` writing ``kind`` critiques; its ``critic.template`` is kept for its own kind only."""
    return dataclasses.replace(cfg, critique_type=kind, template=cfg.template if kind == cfg.critique_type else "")


def probe_kinds(cfg: CriticConfig, task_name: str) -> tuple[str, ...]:
    """The kinds a critic can write: the rule critic has chain-of-thought critiques of the synthetic task only."""
    if cfg.backend == "rule" and task_name != "arithmetic" and not (cfg.critique_type == "cot" and cfg.template):
        return tuple(k for k in KINDS if k != "cot")
    return KINDS


def critic_from_file(cfg: Config, path: str) -> CriticConfig:
    """The ``critic:`` section of the YAML file ``path`` merged over ``cfg.critic`` (other sections are ignored)."""
    data = read_yaml_file(path, f"--critic {path}",
                          f"--critic {path}: no such file (a YAML file with a critic: section, like examples/critic_hf.yaml)")
    section = data.get("critic") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"--critic {path}: expected a critic: section (a mapping of critic.* keys), like examples/critic_hf.yaml")
    base = cfg.to_dict()
    return config_from_dict({**base, "critic": {**base["critic"], **section}}, f"--critic {path}").critic


# ---------------------------------------------------------------------------- model I/O
def candidate_batches(task, seed: int, size: int) -> Iterator[list]:
    """Batches of training problems: the synthetic task's hard and easy training distribution
    (``task.train_hard_fraction`` hard), drawn from ``seed``; another task's training batches."""
    from critique_rl.tasks.arithmetic import ProblemSource

    source = getattr(task, "source", None)
    if isinstance(source, ProblemSource):
        rng = random.Random(f"{seed}/probe")
        num_hard = round(size * source.cfg.train_hard_fraction)
        while True:
            yield [source.sample(rng, hard=i < num_hard) for i in range(size)]
    step = 0
    while True:
        yield task.train_batch(step, size)
        step += 1


def find_failures(engine, prompts, task, params, k: int, limit: int, max_candidates: int,
                  seed: int) -> tuple[list[tuple[Any, str]], int]:
    """Up to ``limit`` (problem, failed attempt) of distinct candidates with 0 of ``k`` correct, and
    how many candidates were sampled (at most ``max_candidates``)."""
    failures: list[tuple[Any, str]] = []
    seen: set[str] = set()
    sampled = drawn = 0
    batches = candidate_batches(task, seed, max(limit, 1))
    while len(failures) < limit and sampled < max_candidates and drawn < 4 * max_candidates:
        batch = next(batches)
        drawn += len(batch)
        fresh = []
        for p in batch:
            if p.question not in seen:
                seen.add(p.question)
                fresh.append(p)
        fresh = fresh[:max_candidates - sampled]
        if not fresh:
            continue
        sampled += len(fresh)
        outs = engine.generate([prompts.solve(p.question) for p in fresh], k, params)
        flat = task.reward([p for p in fresh for _ in range(k)], [c.text for o in outs for c in o])
        rewards = [flat[i * k:(i + 1) * k] for i in range(len(fresh))]
        failures += [(fresh[i], outs[i][0].text) for i in persistent_failures(rewards, limit - len(failures))]
    return failures, sampled


def kind_critics(cfg: CriticConfig, task_name: str, policy, seed: int) -> dict[str, Any]:
    """One critic per kind. A model critic's template-rendered kinds share its cot critic's
    generator (never called for them), so a local model is loaded once."""
    from critique_rl.critics import build_critic
    from critique_rl.critics.generative import GenerativeCritic

    kinds = probe_kinds(cfg, task_name)
    out: dict[str, Any] = {}
    model_critic = None
    if cfg.backend != "rule":
        model_critic = out["cot"] = build_critic(kind_config(cfg, "cot"), task_name, policy=policy, seed=seed)
    for kind in kinds:
        if kind in out:
            continue
        if isinstance(model_critic, GenerativeCritic):
            out[kind] = GenerativeCritic(kind_config(cfg, kind), task_name, model_critic.generator, cache=None)
        else:
            out[kind] = build_critic(kind_config(cfg, kind), task_name, policy=policy, seed=seed)
    return {kind: out[kind] for kind in kinds}


def probe_critic(label: str, cfg: CriticConfig, failures, task, engine, prompts, params, refinements: int,
                 policy, seed: int) -> list[dict[str, Any]]:
    """The rows of one critic: each kind's critiques of the failures, refined and verified."""
    from critique_rl.critics import CritiqueRequest
    from critique_rl.critics.base import critic_reference

    critics = kind_critics(cfg, task.name, policy, seed)
    rows = []
    try:
        requests = [CritiqueRequest(p.question, attempt, critic_reference(cfg, task, p), False, p) for p, attempt in failures]
        for kind, critic in critics.items():
            critiques = critic.critique(requests) if requests else []
            refine_prompts = [prompts.refine(r.question, r.attempt, c.text) for r, c in zip(requests, critiques)]
            outs = engine.generate(refine_prompts, refinements, params) if refine_prompts else []
            flat = task.reward([p for p, _ in failures for _ in range(refinements)], [c.text for o in outs for c in o])
            rewards = [flat[i * refinements:(i + 1) * refinements] for i in range(len(failures))]
            fallbacks = sum(bool(c.provenance.get("fallback")) for c in critiques) if cfg.backend != "rule" else None
            noised = sum(bool(c.provenance.get("noised")) for c in critiques) if cfg.backend == "rule" and cfg.noise > 0 and kind == "cot" else None
            rows.append(probe_row(label, cfg.backend, kind, rewards, fallbacks, noised))
    finally:
        closed = set()
        for critic in critics.values():
            generator = getattr(critic, "generator", None)
            if hasattr(critic, "close") and id(generator) not in closed:
                closed.add(id(generator))
                critic.close()
    return rows


def run_probe(cfg: Config, model_path: str, critics: Sequence[tuple[str, CriticConfig]], problems: int = 64, k: int = 8,
              refinements: int = 1, max_candidates: int | None = None, log=sys.stderr) -> dict[str, Any]:
    """Probe the policy at ``model_path`` with each (label, critic config); the result as a dict
    (see the module docstring; ``format_table``, ``json_line``)."""
    import torch

    from critique_rl.modeling import load_policy
    from critique_rl.rollout import build_engine, rollout_sampling
    from critique_rl.tasks import build_task
    from critique_rl.templates import PolicyPrompts

    if problems < 1 or k < 1 or refinements < 1:
        raise ConfigError(f"probe needs --problems, --k and --refinements >= 1, got {problems}, {k}, {refinements}")
    max_candidates = max_candidates if max_candidates is not None else 16 * problems
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(model_path, cfg.model, what="--model")
    task = build_task(cfg)
    params = rollout_sampling(cfg.rollout)
    try:
        with tempfile.TemporaryDirectory(prefix="critique-rl-probe-") as run_dir:
            engine = build_engine(cfg.rollout, model, tokenizer, Path(run_dir))
            prompts = PolicyPrompts(cfg.prompts, tokenizer)
            print(f"probe: sampling {k} completions per candidate (at most {max_candidates} candidates) to find "
                  f"{problems} persistent failures", file=log, flush=True)
            failures, candidates = find_failures(engine, prompts, task, params, k, problems, max_candidates, cfg.seed)
            print(f"probe: {len(failures)} persistent failures among {candidates} candidates", file=log, flush=True)
            rows = []
            for label, critic_cfg in critics:
                print(f"probe: critic {label} ({critic_cfg.backend})", file=log, flush=True)
                rows += probe_critic(label, critic_cfg, failures, task, engine, prompts, params, refinements,
                                     (model, tokenizer), cfg.seed)
    finally:
        task.close()
    return {"model": str(model_path), "seed": cfg.seed, "k": k, "candidates": candidates, "problems": len(failures),
            "requested_problems": problems, "refinements_per_attempt": refinements,
            "temperature": cfg.rollout.temperature, "rows": rows}
