"""critique-rl: command line.

    critique-rl pipeline --out runs/demo [--seed 1] [--config toy] [key=value ...]
    critique-rl warmstart --out runs/ws
    critique-rl warmstart-critic --out runs/ws        # the tiny critic model: runs/ws/critic_model
    critique-rl critic-quality --critic-model runs/ws/critic_model
    critique-rl pipeline --critic model --out runs/demo-critic-model
    critique-rl train --out runs/cgrpo model.name_or_path=runs/ws method=critique_grpo
    critique-rl train --resume runs/cgrpo
    critique-rl eval --model runs/cgrpo/checkpoints/step-000150
    critique-rl eval --model MODEL --benchmarks math500,aime24 --out runs/eval prompts.solve=math/solve.jinja
    critique-rl eval --model MODEL --dataset olympiadbench.yaml --out runs/eval
    critique-rl data list
    critique-rl data pull math500 aime24 [--dir DIR]
    critique-rl report runs/a runs/b --out runs/cmp
    critique-rl report runs/demo runs/demo-seed1    # folders of runs (pipeline outputs): all their runs
    critique-rl compare --config entropy --seeds 0,1,2 --out runs/entropy-compare
    critique-rl inspect runs/cgrpo [--step 150] [--prompt 0] [--list]
    critique-rl probe --model runs/ws [--critic examples/critic_self.yaml ...] [--problems 64] [--k 8] [--json]
    critique-rl render --template arithmetic/critique_cot.jinja --example 0
    critique-rl render --critic-prompt critic.backend=openai critic.api=completions
    critique-rl config show [PRESET]
    critique-rl check-config [PRESET_OR_YAML ...]
    critique-rl config reference [--write README.md]

Commands that take --config use $CRITIQUE_RL_CONFIG (a preset name or YAML file) when it is
not given, else the toy preset; e.g. CRITIQUE_RL_CONFIG=tiny runs any of them in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from critique_rl.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    describe,
    load_config,
)
from critique_rl.critics.base import CriticAuthError
from critique_rl.checkpoint import CheckpointError
from critique_rl.interrupts import NonFiniteLoss, TrainingInterrupted
from critique_rl.rollout.server import RolloutServerError


def _load(args) -> "Config":  # noqa: F821
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "seed", None) is not None:
        cfg.seed = args.seed
    return cfg


def _config_name(args) -> str:
    """The config a command was launched with, as its title shows it: 'toy', 'toy + train.steps=30'."""
    return " + ".join([args.config, " ".join(args.overrides)] if args.overrides else [args.config])


def cmd_pipeline(args) -> int:
    from critique_rl.pipeline import run_pipeline

    name = _config_name(args)
    if args.critic == "model":
        from critique_rl.warmstart import CRITIC_MODEL_OVERRIDES

        name = _config_name(argparse.Namespace(config=f"{args.config} --critic model", overrides=args.overrides))
        # The critic model's settings first: the command line's own overrides can still change them.
        args.overrides = [*CRITIC_MODEL_OVERRIDES, *args.overrides]
    cfg = _load(args)
    out = Path(args.out)
    summary = run_pipeline(cfg, out, config_name=name)
    print(f"report: {out / 'report.md'}  plots: {out / 'curves.png'}  numbers: {out / 'summary.json'}")
    print(summary["verdict"])
    return 0


def cmd_warmstart(args) -> int:
    from critique_rl.pipeline import ensure_warm_start

    cfg = _load(args)
    path = ensure_warm_start(cfg, Path(args.out))
    print(f"warm-start model saved to {path}")
    return 0


def cmd_warmstart_critic(args) -> int:
    from critique_rl.pipeline import ensure_critic_model

    cfg = _load(args)
    if args.no_quality:
        cfg.critic_model.eval_problems = 0
    reused = (Path(args.out) / "critic_model" / "model.safetensors").is_file()
    path = ensure_critic_model(cfg, Path(args.out))
    print(f"critic model {'reused (already there)' if reused else 'saved'}: {path}")
    return 0


def cmd_critic_quality(args) -> int:
    from critique_rl.critic_quality import critic_model_quality
    from critique_rl.warmstart import CRITIC_MODEL_OVERRIDES

    cfg = _load(args)
    if cfg.critic.backend not in ("hf", "self"):
        # Not a model critic's config: the critic model's settings, under the command line's overrides.
        args.overrides = [*CRITIC_MODEL_OVERRIDES, *args.overrides]
        cfg = _load(args)
    print(json.dumps(critic_model_quality(cfg, args.critic_model, args.problems)))
    return 0


def cmd_train(args) -> int:
    from critique_rl.modeling import check_model_source
    from critique_rl.pipeline import (
        ensure_critic_model,
        ensure_warm_start,
        run_training,
        save_config,
        wants_critic_model,
    )
    from critique_rl.trainer import Trainer

    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is this a run directory?")
        cfg = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
        # Overrides on resume extend or adjust the run, e.g. train.steps=300 to train longer.
        cfg = apply_overrides(cfg, args.overrides)
        save_config(cfg, run_dir)
        trainer = Trainer(cfg, run_dir)
        step = trainer.resume()
        print(f"resumed {run_dir} at step {step}" if step else f"{run_dir} has no checkpoint yet: training it from step 0")
        final = trainer.train()
    else:
        cfg = _load(args)
        if args.dry_run:
            return dry_run(cfg)
        if not args.out:
            raise ConfigError("train needs --out RUN_DIR (or --resume RUN_DIR)")
        run_dir = Path(args.out)
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
        if not cfg.model.name_or_path and cfg.task.name == "arithmetic":
            # model.name_or_path empty means "the warm-start model of the run": trained once, kept beside the run
            print(f"model.name_or_path is empty: warm-starting the tiny policy into {run_dir}/warmstart", flush=True)
            cfg = apply_overrides(cfg, [f"model.name_or_path={ensure_warm_start(cfg, run_dir)}"])
        if cfg.method == "critique_grpo" and wants_critic_model(cfg):
            # critic.backend hf with critic.model empty: the run's own tiny critic model, kept beside the run
            print(f"critic.model is empty: training the tiny critic model into {run_dir}/critic_model", flush=True)
            cfg = apply_overrides(cfg, [f"critic.model={ensure_critic_model(cfg, run_dir)}"])
        check_model_source(cfg.model.name_or_path)       # a mistyped path fails before the run directory is made
        final = run_training(cfg, run_dir)
    print(json.dumps(final, indent=2))
    return 0


def dry_run(cfg) -> int:
    """`train --dry-run`: the resolved config and the first prompts as the policy reads them, after
    checking that the policy's config and tokenizer load (not its weights: a dry run takes seconds)."""
    from critique_rl.modeling import load_tokenizer
    from critique_rl.templates import PolicyPrompts

    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    policy = PolicyPrompts(cfg.prompts, tokenizer)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    for name, text in example_prompts(cfg, 0).items():
        print(f"--- {name}\n{(text if name == 'critique' else policy.wrap(text)).rstrip()}")
    print(f"--- model.name_or_path {cfg.model.name_or_path}: config and tokenizer load"
          f"{' (chat template on)' if policy.chat else ''}")
    return 0


def cmd_eval(args) -> int:
    from critique_rl.benchmark_eval import load_eval_sets
    from critique_rl.config import load_dataset_spec
    from critique_rl.evaluate import greedy_pass1, sampled_pass_at_k
    from critique_rl.modeling import load_policy
    from critique_rl.rollout import SamplingParams, build_engine
    from critique_rl.tasks import build_task
    from critique_rl.templates import PolicyPrompts

    cfg = _load(args)
    if args.benchmarks is not None:
        cfg.benchmarks.benchmarks = args.benchmarks
    specs = []
    if args.dataset:
        spec = load_dataset_spec(args.dataset)
        spec.name = spec.name or Path(args.dataset).stem
        specs.append(spec)
    sets = None
    if cfg.benchmarks.benchmarks or specs:
        sets = load_eval_sets(cfg.benchmarks, specs)  # before the model: a missing or malformed set fails in seconds
    elif cfg.task.name == "math":
        raise ConfigError("nothing to evaluate: task math has no held-out splits of its own; name benchmarks "
                          "(--benchmarks math500,aime24, see `critique-rl data list`) or a dataset (--dataset SPEC.yaml)")
    model, tokenizer = load_policy(args.model, cfg.model, what="--model")
    out = Path(args.out)
    engine = build_engine(cfg.rollout, model, tokenizer, out)
    prompts = PolicyPrompts(cfg.prompts, tokenizer)
    if sets is not None:
        return eval_benchmarks(cfg, sets, engine, prompts, out)
    task = build_task(cfg)
    max_len, n, k = cfg.rollout.max_completion_length, cfg.eval.pass_n, cfg.eval.pass_k
    params = SamplingParams(max_len, cfg.eval.temperature)
    result = {}
    for split, problems in task.eval_sets().items():
        texts = [prompts.solve(p.question) for p in problems]
        result[f"{split}_pass1"] = greedy_pass1(engine, texts, problems, task.reward, max_len)
        result[f"{split}_pass@{k}"] = sampled_pass_at_k(engine, texts, problems, task.reward, n, k, params)
    task.close()
    print(json.dumps(result, indent=2))
    return 0


def eval_benchmarks(cfg, sets, engine, prompts, out: Path) -> int:
    """Greedy pass@1, mean@N and pass@k per evaluation set (name -> examples): a table, results.json
    and every sample as JSONL."""
    from critique_rl.benchmark_eval import evaluate_benchmarks, format_table, with_average
    from critique_rl.math_reward import make_math_reward
    from critique_rl.rollout import SamplingParams

    b = cfg.benchmarks
    max_len = b.max_new_tokens or cfg.rollout.max_completion_length
    greedy = SamplingParams(max_len, greedy=True)
    sampled = SamplingParams(max_len, b.temperature, b.top_p)
    reward = make_math_reward(cfg.verifier)
    try:
        rows = evaluate_benchmarks(
            sets, b, out, render=prompts.solve, reward=reward,
            greedy_generate=lambda ps, n: [[c.text for c in o] for o in engine.generate(ps, n, greedy)],
            sample_generate=lambda ps, n: [[c.text for c in o] for o in engine.generate(ps, n, sampled)])
    finally:
        reward.verifier.close()
    rows = with_average(rows)
    table = format_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table)
    print(f"results: {out / 'results.json'}  samples: {out}/<name>.samples.jsonl")
    return 0


def cmd_data(args) -> int:
    from critique_rl.benchmark_data import BENCHMARKS, data_dir, pull

    root = data_dir(args.dir)
    if args.action == "list":
        print(f"data directory: {root}  (--dir, else $CRITIQUE_RL_DATA, else ~/.cache/critique-rl/data)")
        print("| name | pulled | rows | hub dataset | license | what |\n|---|---|---|---|---|---|")
        for b in BENCHMARKS.values():
            hub = " ".join(filter(None, (b.source.path, b.source.config, f"split {b.source.split}")))
            pulled = "yes" if (root / b.file).is_file() else "no"
            print(f"| {b.name} | {pulled} | {b.rows} | {hub} | {b.license} | {b.about} |")
        return 0
    names = list(BENCHMARKS) if args.names == ["all"] else args.names
    if args.source and len(names) != 1:
        raise ConfigError(f"--source replaces one benchmark's hub dataset; name exactly one benchmark, not {len(names)}")
    for name in names:
        result = pull(name, root, args.source, args.force)
        if result.rows:
            print(f"{name}: {result.rows} rows -> {result.path}" + (f" ({result.note})" if result.note else ""))
        else:
            print(f"{name}: {result.note}: {result.path}")
    return 0


def cmd_report(args) -> int:
    from critique_rl.report import run_dirs, write_report

    dirs = run_dirs(args.runs)  # before anything is written: a path that holds no run fails here
    # Runs are named by their directory, with its parent where two share a name (runs/seed0/grpo, runs/seed1/grpo).
    names = [d.name for d in dirs]
    runs = {(name if names.count(name) == 1 else f"{d.parent.name}/{name}"): d for name, d in zip(names, dirs)}
    first = Path(args.runs[0])
    # A folder of runs gets its own report/ folder: a pipeline's report.md and summary.json stay its own.
    out = Path(args.out) if args.out else first if first == dirs[0] else first / "report"
    write_report(runs, out, args.k)
    print(f"report: {out / 'report.md'}  plots: {out / 'curves.png'}")
    return 0


def cmd_inspect(args) -> int:
    from critique_rl.inspect_run import inspect_run

    return inspect_run(Path(args.run), args.step, args.prompt, args.list, args.attempt_tokens, args.full, args.color)


def cmd_probe(args) -> int:
    from critique_rl.probe import critic_from_file, critic_labels, format_table, json_line, run_probe

    cfg = _load(args)
    paths = args.critic or []
    critics = list(zip(critic_labels(paths), [critic_from_file(cfg, path) for path in paths])) or [(cfg.critic.backend, cfg.critic)]
    result = run_probe(cfg, args.model, critics, args.problems, args.k, args.refinements, args.max_candidates)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        print(json_line(result))
    return 0


def example_request(cfg, index: int):
    """A critique request for evaluation problem ``index`` with a plausible wrong attempt."""
    import random

    from critique_rl.critics import CritiqueRequest
    from critique_rl.tasks.arithmetic import ProblemSource, wrong_attempt

    source = ProblemSource(cfg.task, cfg.seed)
    problems = source.eval_hard + source.eval_easy
    problem = problems[index % len(problems)]
    attempt = wrong_attempt(random.Random(index), problem)
    return CritiqueRequest(problem.question, attempt, str(problem.answer), False, problem)


def example_prompts(cfg, index: int) -> dict[str, str]:
    """What the policy sees for example ``index``: solve prompt, critique, refine prompt."""
    from critique_rl.critics import build_critic
    from critique_rl.templates import load_template

    request = example_request(cfg, index)
    [critique] = build_critic(cfg.critic, cfg.task.name, seed=cfg.seed).critique([request])
    return {
        "solve": load_template(cfg.prompts.solve).render(question=request.question),
        "critique": critique.text,
        "refine": load_template(cfg.prompts.refine).render(question=request.question, attempt=request.attempt,
                                                           critique=critique.text),
    }


def cmd_render(args) -> int:
    cfg = _load(args)
    if args.critic_prompt:
        from critique_rl.critics.prompting import CriticPrompt

        prompt = CriticPrompt(cfg.critic, cfg.task.name).render(example_request(cfg, args.example))
        print(prompt if isinstance(prompt, str) else json.dumps(prompt, indent=2, ensure_ascii=False) + "\n", end="")
        return 0
    if args.template and "critique" in Path(args.template).name:
        cfg.critic.template = args.template
    prompts = example_prompts(cfg, args.example)
    if not args.template:
        for name, text in prompts.items():
            print(f"--- {name}\n{text.rstrip()}")
        return 0
    name = Path(args.template).name
    kind = "critique" if "critique" in name else "refine" if "refine" in name else "solve"
    if kind != "critique":
        setattr(cfg.prompts, kind, args.template)
        prompts = example_prompts(cfg, args.example)
    print(prompts[kind], end="" if prompts[kind].endswith("\n") else "\n")
    return 0


def cmd_fit_entropy(args) -> int:
    from critique_rl.entropy_law import (
        fit_on_prefix,
        pairs_from_jsonl,
        pairs_from_run,
        plot_fit,
        window_points,
    )

    if not args.runs and not args.jsonl:
        raise ConfigError("fit-entropy needs RUN_DIR arguments or --jsonl FILE")
    series = [pairs_from_run(Path(d), args.accuracy_key) for d in args.runs] + \
             ([pairs_from_jsonl(Path(args.jsonl))] if args.jsonl else [])
    fit = fit_on_prefix(series, args.fit_fraction, args.window, args.heldout_steps)
    entropy, accuracy = [h for H, _ in series for h in H], [r for _, R in series for r in R]
    plot = Path(args.plot or (Path(args.runs[0]) / "entropy_law.png" if args.runs else "entropy_law.png"))
    plot_fit(entropy, accuracy, fit, plot, window_points(series, args.window))
    if args.json:
        print(json.dumps({**fit.to_dict(), "plot": str(plot)}))
    else:
        def r2(v):
            return "—" if v is None else f"{v:.4f}"

        print(f"R = -a*exp(H) + b fitted on {fit.points} points: a = {fit.a:.4g}, b = {fit.b:.4g}, "
              f"ceiling b - a = {fit.ceiling:.4f}, rmse = {fit.rmse:.4f}, R² = {r2(fit.r2)}")
        if fit.window_a is not None:
            print(f"fitted on {fit.window_points} means of {fit.window} steps: a = {fit.window_a:.4g}, "
                  f"b = {fit.window_b:.4g}, ceiling b - a = {fit.window_ceiling:.4f}, R² = {r2(fit.r2_window)}")
        else:
            print(f"window fit: {fit.window_points} means of {fit.window} steps, fewer than the 3 it needs")
        if fit.heldout_points:
            print(f"prediction of the {fit.heldout_points} later points: rmse = {fit.heldout_rmse:.4f}; mean accuracy over "
                  f"each run's last {args.heldout_steps} held-out steps ({fit.heldout_mean_points} points): predicted "
                  f"{fit.heldout_predicted_mean:.4f}, actual {fit.heldout_actual_mean:.4f}, "
                  f"error {fit.heldout_mean_error:+.4f}")
        print(f"plot: {plot}")
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers such as 0,1,2, got {text!r}")
    return seeds


def cmd_compare(args) -> int:
    import shlex

    from critique_rl.compare import DEFAULT_METHODS, run_compare, run_compare_seeds

    if args.seeds is not None and args.seed is not None:
        raise ConfigError("compare: give --seed (one seed, runs in --out) or --seeds (runs in --out/seed{N}), not both")
    cfg = _load(args)
    methods = DEFAULT_METHODS if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out)
    seed_args = (["--seeds", ",".join(map(str, args.seeds))] if args.seeds is not None
                 else ["--seed", str(args.seed)] if args.seed is not None else [])
    if args.jobs < 1:
        raise ConfigError(f"compare: --jobs must be at least 1, got {args.jobs}")
    command = shlex.join(["critique-rl", "compare", "--config", args.config, *seed_args, "--methods", args.methods,
                          *(["--jobs", str(args.jobs)] if args.jobs > 1 else []), "--out", args.out, *args.overrides])
    if args.seeds is not None:
        result = run_compare_seeds(cfg, out, methods, args.seeds, config_name=_config_name(args), command=command,
                                   jobs=args.jobs)
        walls = result["wall_seconds"]
        plots = f"{out / 'entropy.png'}, {out / 'entropy_reward.png'}, {out / 'methods.png'}, {out}/seed{{N}}/curves.png"
    else:
        result = run_compare(cfg, out, methods, config_name=_config_name(args), command=command, jobs=args.jobs)
        walls = {str(result["seed"]): result["wall_seconds"]}
        plots = f"{out / 'curves.png'}, {out / 'entropy.png'}, {out / 'entropy_reward.png'}"
    print((out / "compare.md").read_text(), end="")
    print(f"table: {out / 'compare.md'}  numbers: {out / 'compare.json'}  plots: {plots}  ({len(result['methods'])} methods)")
    print("wall time: " + ", ".join(f"seed {seed} {s:.0f} s" for seed, s in walls.items())
          + f"; total {sum(walls.values()):.0f} s")
    return 0


def cmd_config(args) -> int:
    cfg = load_config(args.preset, args.overrides)
    if args.yaml:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    for key, value, default, help in describe(cfg):
        mark = "" if value == default else f"   (default: {default!r})"
        print(f"{key} = {value!r}{mark}\n    {help}")
    return 0


CONFIG_ENV = "CRITIQUE_RL_CONFIG"


def default_config() -> str:
    """The config of commands run without --config: $CRITIQUE_RL_CONFIG, else the toy preset."""
    return os.environ.get(CONFIG_ENV) or "toy"


def cmd_config_reference(args) -> int:
    from critique_rl.config_docs import config_reference, write_reference

    if args.write:
        changed = write_reference(Path(args.write))
        print(f"{args.write}: config reference {'updated' if changed else 'already current'}")
        return 0
    print(config_reference(), end="")
    return 0


def cmd_check_config(args) -> int:
    from critique_rl.check import check_config
    from critique_rl.config import preset_names

    sources = args.configs or preset_names()
    failed = 0
    for source in sources:
        findings = check_config(source, args.overrides)
        errors = sum(f.level == "error" for f in findings)
        failed += bool(errors)
        print(f"{source}: {'FAILED' if errors else 'ok'}" + (f" ({len(findings)} findings)" if findings else ""))
        for f in findings:
            print(f"  {f.level}: {f.message}")
    return 2 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="critique-rl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", default=default_config(),
                       help=f"preset name or YAML file [${CONFIG_ENV} if set, else toy; now: {default_config()}]")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=10 loss.gamma=0.2")
        return p

    p = with_config(sub.add_parser("pipeline", help="warm start, GRPO vs Critique-GRPO, evaluation, report"))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    p.add_argument("--critic", choices=["config", "model"], default="config",
                   help="who critiques: the config's critic [config], or 'model': a tiny critic model trained from scratch "
                   "into OUT/critic_model (critic.backend hf, critic.model empty; warmstart.CRITIC_MODEL_OVERRIDES, "
                   "applied before the overrides given)")
    p.set_defaults(func=cmd_pipeline)

    p = with_config(sub.add_parser("warmstart", help="train the tiny policy from scratch"))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_warmstart)

    p = with_config(sub.add_parser("warmstart-critic", help="train the tiny critic model from scratch (critic_model) into "
                                   "OUT/critic_model, then print its critic quality"))
    p.add_argument("--out", required=True, help="folder of critic_model/ (the folder of a warm start too, if you like)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-quality", action="store_true", help="skip the quality check (critic_model.eval_problems=0)")
    p.set_defaults(func=cmd_warmstart_critic)

    p = with_config(sub.add_parser("critic-quality", help="verdict and first-wrong-step accuracy of a critic model's "
                                   "critiques of held-out attempts, against the rule critic: one JSON line"))
    p.add_argument("--critic-model", required=True, help="a model directory (critic_model/ of warmstart-critic, or a "
                   "self-critic policy with critic.backend=self)")
    p.add_argument("--problems", type=int, help="held-out easy and as many hard problems [critic_model.eval_problems]")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_critic_quality)

    p = with_config(sub.add_parser("train", help="RL from a policy (model.name_or_path)"))
    p.add_argument("--out")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument("--seed", type=int)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the first rendered prompts, then exit")
    p.set_defaults(func=cmd_train)

    p = with_config(sub.add_parser("eval", help="greedy pass@1 and pass@k of a model: named benchmarks, a dataset spec, "
                                   "or the arithmetic task's held-out splits"))
    p.add_argument("--model", required=True, help="a model directory (a checkpoint) or hub id")
    p.add_argument("--benchmarks", help="comma-separated benchmark names (`critique-rl data list`: math500, aime24, amc23, "
                   "minerva_math, gsm8k, olympiadbench ...) [the config's benchmarks.benchmarks]; more settings: benchmarks.* overrides")
    p.add_argument("--dataset", metavar="SPEC.yaml", help="also evaluate any dataset: a YAML file holding one dataset spec, "
                   "the keys of data.train (path or hub id, split, question_field, answer_from, answer_field, ...)")
    p.add_argument("--out", default="eval_results", help="folder of results.md, results.json and <name>.samples.jsonl [eval_results]")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("data", help="the benchmarks known by name: list them, pull copies for offline use")
    dsub = p.add_subparsers(dest="action", required=True)
    dir_help = "the data directory [$CRITIQUE_RL_DATA, else ~/.cache/critique-rl/data]; eval reads it from benchmarks.data_root"
    d = dsub.add_parser("list", help="every benchmark of the registry, and whether it is pulled")
    d.add_argument("--dir", default="", help=dir_help)
    d.set_defaults(func=cmd_data)
    d = dsub.add_parser("pull", help="fetch benchmarks through `datasets` into the data directory, as JSONL")
    d.add_argument("names", nargs="+", metavar="NAME", help="benchmark names, or all")
    d.add_argument("--dir", default="", help=dir_help)
    d.set_defaults(func=cmd_data)
    d.add_argument("--source", default="", help="read the one NAME from this local file or folder, or hub id, instead of "
                   "the registry's hub dataset (same field mapping), e.g. a copy made elsewhere")
    d.add_argument("--force", action="store_true", help="pull again over an existing copy")

    p = sub.add_parser("report", help="plots, table and summary of one or more runs")
    p.add_argument("runs", nargs="+", metavar="DIR", help="run directories, or folders of runs (a pipeline's --out)")
    p.add_argument("--out", help="folder of report.md, curves.png and summary.json [the first DIR; for a folder of runs, "
                   "DIR/report]")
    p.add_argument("-k", type=int, default=4, help="k of pass@k in the table [4]")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("inspect", help="one logged group of a run as the algorithm saw it: attempts, critiques, "
                       "refinements, per-token probabilities and policy shaping")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--step", type=int, help="training step [the last logged one]")
    p.add_argument("--prompt", type=int, default=0, help="index of the logged group in that step [0]")
    p.add_argument("--list", action="store_true", help="one line per logged group (of --step if given), then exit")
    p.add_argument("--attempt-tokens", action="store_true", help="also the per-token probabilities of the attempts")
    p.add_argument("--full", action="store_true", help="attempt texts in full (else cut at 500 characters)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colours: on a terminal only (and not under NO_COLOR) [auto], always (e.g. CI logs), never")
    p.set_defaults(func=cmd_inspect)

    p = with_config(sub.add_parser("probe", help="critique problems the policy persistently fails (0 of k correct) with "
                                   "each critique kind and critic, refine, and count the solved ones"))
    p.add_argument("--model", required=True, help="the policy: a model directory (a warm start, a checkpoint) or hub id")
    p.add_argument("--critic", action="append", metavar="CRITIC.yaml", help="a YAML file whose critic: section is merged "
                   "over the config's (e.g. examples/critic_hf.yaml); repeat to compare critics [the config's critic]")
    p.add_argument("--problems", type=int, default=64, help="persistent failures to probe [64]")
    p.add_argument("--k", type=int, default=8, help="samples per candidate problem; 0 of k correct is a persistent failure [8]")
    p.add_argument("--refinements", type=int, default=1, help="refinements sampled per critique [1]")
    p.add_argument("--max-candidates", type=int, help="training problems sampled at most while looking for failures [16 x --problems]")
    p.add_argument("--seed", type=int, help="seed of the candidate problems and the sampling [the config's]")
    p.add_argument("--json", action="store_true", help="print only the JSON object (else a table, then it on a line "
                   "starting 'probe-json: ')")
    p.set_defaults(func=cmd_probe)

    p = with_config(sub.add_parser("render", help="print what a template renders for an example problem"))
    p.add_argument("--template", default="", help="template path or packaged name [all: solve, critique, refine]")
    p.add_argument("--example", type=int, default=0)
    p.add_argument("--critic-prompt", action="store_true",
                   help="print the exact input of a model critic (openai, hf, self): chat messages as JSON, or the completions text")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("fit-entropy", help="fit R = -a*exp(H) + b to (entropy, accuracy) points of runs")
    p.add_argument("runs", nargs="*", help="run directories (pairs: each step's entropy and --accuracy-key)")
    p.add_argument("--jsonl", help='a file of {"entropy": H, "accuracy": R} objects')
    p.add_argument("--accuracy-key", default="reward", help="metric used as accuracy R [reward: the step's training accuracy, logged every step; eval/hard_pass1 keeps only eval steps, each with its own step's entropy]")
    p.add_argument("--fit-fraction", type=float, default=1.0, help="fit on the first fraction of each run's points, score "
                   "the rest: heldout_rmse, and heldout_mean_error = predicted - actual mean accuracy of the last --heldout-steps")
    p.add_argument("--window", type=int, default=10, help="steps averaged into one point of the window fit (r2_window, "
                   "window_a/b/ceiling), each run on its own [10]")
    p.add_argument("--heldout-steps", type=int, default=30, help="with --fit-fraction < 1: the last steps of each run "
                   "whose mean accuracy the fit predicts [30]")
    p.add_argument("--plot", help="PNG path [RUN_DIR/entropy_law.png]")
    p.add_argument("--json", action="store_true", help="print one JSON object: a, b, ceiling, rmse, r2, r2_window, ...")
    p.set_defaults(func=cmd_fit_entropy)

    p = with_config(sub.add_parser("compare", help="GRPO, Critique-GRPO and the entropy interventions from one warm start "
                                   "per seed"))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, help="one seed, its runs directly in --out [the config's]")
    p.add_argument("--seeds", type=_seed_list, metavar="S1,S2,...", help="several seeds: each in OUT/seed{N} with its "
                   "own warm start; OUT/compare.md and compare.json give mean ± std over them")
    p.add_argument("--methods", default="all", help="comma-separated names from compare.METHODS (grpo_std only by name) "
                   "and critique_grpo+best [all: grpo, clip_higher, clip_cov, kl_cov, gppo, top_entropy, entropy_bonus, "
                   "critique_grpo, critique_grpo+best]")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process with its share of "
                   "the cores (2 on a 2-core machine: the whole entropy comparison of one seed in ~25 minutes) [1]")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("check-config", help="validate presets or YAML files without a GPU or a download: templates render, "
                       "the first rows of every dataset map (a hub only when reachable) [all presets]")
    p.add_argument("configs", nargs="*", help="preset names or YAML paths [every preset]")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override applied to each config (repeatable)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("config", help="config tools")
    csub = p.add_subparsers(dest="action", required=True)
    s = csub.add_parser("show", help="the resolved config with each field's description")
    s.add_argument("preset", nargs="?", default=default_config(), help=f"preset name or YAML file [${CONFIG_ENV} or toy]")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--yaml", action="store_true", help="print plain YAML")
    s.set_defaults(func=cmd_config)
    s = csub.add_parser("reference", help="Markdown reference of every config field (type, default, description)")
    s.add_argument("--write", metavar="FILE",
                   help="replace the block between <!-- config-reference:start --> and <!-- config-reference:end --> of FILE")
    s.set_defaults(func=cmd_config_reference)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Line-buffered output so per-step summaries reach CI logs and `tee` as they happen.
    sys.stdout.reconfigure(line_buffering=True)
    # transformers' own per-save/per-load bars would interleave with the per-step summaries.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, ImportError, CriticAuthError, RolloutServerError) as err:
        print(f"critique-rl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(f"critique-rl {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except CheckpointError as err:
        print(f"critique-rl {args.command}: error: {err}", file=sys.stderr)
        return 4
    except NonFiniteLoss as err:
        print(f"critique-rl {args.command}: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
