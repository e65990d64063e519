"""Seconds per GRPO step: TRL's GRPOTrainer vs ours (``method=grpo``), same model, prompts and loss, on CPU.

    pip install -e ".[bench]"       # TRL, a benchmark-only dependency
    python scripts/bench_vs_trl.py [--model DIR] [--steps 8] [--warmup 2] [--threads 1]

Both trainers load the same checkpoint directory (by default a random-weight tiny Qwen2 built
from the preset's ``warmstart`` section; ``--model`` takes a trained warm start instead) and
train on the same prompts: our arithmetic task's solve prompts, rendered with the solve
template, step i the same prompts for both. They run in one process and are measured
alternately: TRL's training loop runs, and a callback at the end of each TRL optimizer step
runs one step of ours; so a burst of load from other jobs hits both about equally.

Held equal (TRL's defaults differ where noted):

* model weights, dtype float32 (TRL defaults to bf16 autocast), no gradient checkpointing (TRL
  defaults to it), CPU, the same torch thread count;
* prompts, group size (``num_generations``), prompts per step, max completion length;
* sampling: transformers ``generate`` with a KV cache, temperature 1, top_p 1, top_k 0, stop at
  EOS, all prompts of a step in one ``generate`` call;
* loss: ``dr_grpo``, advantages not scaled by the group std, beta 0 (no KL, no reference
  model), PPO clip 0.2, one optimizer step per rollout batch (TRL: ``steps_per_generation`` 1,
  ``num_iterations`` 1, ``gradient_accumulation_steps`` 1; ours: ``num_iterations`` 1,
  ``mini_batches`` 1), so neither recomputes old log-probs; the whole batch in one forward and
  backward (ours: the token budget holds it);
* AdamW (``adamw_torch``), constant learning rate, grad-norm clipping 1.0;
* logging, checkpoints, evaluation and completion printing off in TRL; ours writes its per-step
  samples.jsonl (part of its normal step) and skips evaluation (``eval.every=0``).

A TRL step is timed from the end of our previous step to the end of its optimizer step (data
loading, generation, reward, loss, backward, optimizer, its per-step bookkeeping); ours is
``Trainer.step()`` plus its metrics logging. Both wall and process CPU time are kept, and the
seconds each step spent in ``model.generate`` (the same probe wraps both models). Tokens/s
counts completion tokens sampled and trained per second of step time.

A step's cost depends on its longest completion: every sequence of the batch is decoded and
trained at that width. With random weights (the default) nearly every step has a completion
that runs to ``--max-completion-length``, so both trainers do the same work per step; with a
trained warm start the longest completion varies from step to step (and differs between the
two runs, which sample independently), so compare ``ratio_full_length_steps`` (medians over
the steps that decoded to the maximum length) and ``ratio_per_step_median`` too.

On a machine shared with other jobs use ``--threads 1``: two OpenMP threads at low priority on
two busy cores made steps 10-25x slower here, as each parallel region waits for the descheduled
thread. The last line of output is one JSON object with ``ratio_ours_over_trl`` (our median
step time / TRL's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from critique_rl.config import load_config
from critique_rl.tasks.arithmetic import ProblemSource
from critique_rl.modeling import build_char_tokenizer, build_tiny_model
from critique_rl.tasks.arithmetic import verify
from critique_rl.templates import load_template


def make_model(preset: str, out: Path, seed: int) -> Path:
    """A random-weight tiny Qwen2 and its tokenizer, saved with save_pretrained."""
    cfg = load_config(preset)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.warmstart, tokenizer, seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def step_prompts(preset: str, seed: int, steps: int, per_step: int) -> list[list[dict]]:
    """The solve prompts of each step, as our trainer draws them (ProblemSource + solve template)."""
    cfg = load_config(preset, [f"seed={seed}"])
    source, solve = ProblemSource(cfg.task, seed), load_template(cfg.prompts.solve)
    return [[{"prompt": solve.render(question=p.question), "answer": p.answer} for p in source.train_batch(s, per_step)]
            for s in range(steps)]


def our_trainer(model: Path, args, run_dir: Path):
    from critique_rl.trainer import Trainer

    cfg = load_config(args.preset, [
        "method=grpo", f"seed={args.seed}", f"model.name_or_path={model}", "model.device=cpu",
        f"rollout.num_generations={args.num_generations}", f"rollout.max_completion_length={args.max_completion_length}",
        "rollout.temperature=1.0", "rollout.top_p=1.0", f"rollout.generation_batch_size={args.prompts * args.num_generations}",
        f"train.prompts_per_step={args.prompts}", "train.num_iterations=1", "train.mini_batches=1",
        f"train.learning_rate={args.lr}", "train.warmup_steps=1", "train.weight_decay=0.0", "train.max_grad_norm=1.0",
        f"train.max_tokens_per_microbatch={args.prompts * args.num_generations * 512}",
        "loss.loss_type=dr_grpo", "loss.scale_rewards=none", "loss.beta=0.0", "loss.epsilon=0.2", "loss.epsilon_high=0.2",
        "eval.every=0",
    ])
    return Trainer(cfg, run_dir, show_progress=False)


def time_generate(model, sink: list[tuple[float, int]]) -> None:
    """Record (seconds, new positions) of every ``model.generate`` call in ``sink`` (the same probe on both
    trainers). New positions: how many decoding steps the call ran, the longest completion of its batch."""
    generate = model.generate

    def timed(*a, **kw):
        t = time.perf_counter()
        out = generate(*a, **kw)
        width = kw["input_ids"].shape[1] if "input_ids" in kw else a[0].shape[1]
        sequences = getattr(out, "sequences", out)          # a tensor, or a ModelOutput (return_dict_in_generate)
        sink.append((time.perf_counter() - t, sequences.shape[1] - width))
        return out

    model.generate = timed


class Alternate:
    """TRL callback: time each TRL step, then run and time one step of ours."""

    def __init__(self, ours):
        self.ours = ours
        self.times: dict[str, list[float]] = {"trl": [], "ours": []}
        self.cpu: dict[str, list[float]] = {"trl": [], "ours": []}       # process CPU seconds per step
        self.tokens: dict[str, list[int]] = {"trl": [], "ours": []}
        self.generate: dict[str, list[float]] = {"trl": [], "ours": []}    # seconds in generate per step
        self.generate_calls: dict[str, list[float]] = {"trl": [], "ours": []}
        self.positions: dict[str, list[int]] = {"trl": [], "ours": []}    # longest completion of the step
        self.probe: dict[str, list[tuple[float, int]]] = {"trl": [], "ours": []}   # generate calls of the current step
        self.mark = self.cpu_mark = 0.0
        self.pending_tokens = 0
        self.trl_prompts: list[list[str]] = []          # the distinct prompts TRL scored, per step
        self.our_prompts: list[list[str]] = []          # the distinct prompts our engine sampled, per step
        time_generate(ours.model, self.probe["ours"])
        engine_generate = ours.engine.generate

        def generate(prompts, num_samples, params):
            self.our_prompts.append(sorted(set(prompts)))
            return engine_generate(prompts, num_samples, params)

        ours.engine.generate = generate

    def reward(self, prompts, completions, completion_ids, answer, **_):
        """TRL reward function: our verifier; also counts the step's completion tokens."""
        self.pending_tokens = sum(len(c) for c in completion_ids)
        self.trl_prompts.append(sorted(set(prompts)))
        return [verify(a, c) for a, c in zip(answer, completions)]

    def record(self, name: str, seconds: float, cpu: float, tokens: int) -> None:
        self.times[name].append(seconds)
        self.cpu[name].append(cpu)
        self.tokens[name].append(tokens)
        self.generate[name].append(sum(t for t, _ in self.probe[name]))
        self.positions[name].append(max((n for _, n in self.probe[name]), default=0))
        self.generate_calls[name].append(len(self.probe[name]))
        self.probe[name].clear()

    def our_step(self) -> None:
        t, c = time.perf_counter(), time.process_time()
        metrics = self.ours.step()
        metrics["step"] = self.ours.step_index
        self.ours.logger.log(metrics)
        n = self.ours.cfg.rollout.num_generations * self.ours.cfg.train.prompts_per_step
        self.record("ours", time.perf_counter() - t, time.process_time() - c, round(metrics["completions/mean_length"] * n))

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                outer.mark, outer.cpu_mark = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kw):
                outer.record("trl", time.perf_counter() - outer.mark, time.process_time() - outer.cpu_mark,
                             outer.pending_tokens)
                outer.our_step()
                print(f"step {state.global_step:3d}  TRL {outer.times['trl'][-1]:.3f}s  ours {outer.times['ours'][-1]:.3f}s"
                      f"  (CPU {outer.cpu['trl'][-1]:.3f}s / {outer.cpu['ours'][-1]:.3f}s; completion tokens "
                      f"{outer.tokens['trl'][-1]} / {outer.tokens['ours'][-1]}; longest {outer.positions['trl'][-1]} / "
                      f"{outer.positions['ours'][-1]})", flush=True)
                outer.mark, outer.cpu_mark = time.perf_counter(), time.process_time()

        return _Callback()


def trl_trainer(model: Path, dataset, alt: Alternate, args, out: Path):
    from trl import GRPOConfig, GRPOTrainer

    batch = args.prompts * args.num_generations
    config = GRPOConfig(
        output_dir=str(out), use_cpu=True, seed=args.seed, data_seed=args.seed,
        max_steps=args.warmup + args.steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        steps_per_generation=1, num_iterations=1, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, temperature=1.0, top_p=1.0, top_k=0,
        loss_type="dr_grpo", scale_rewards="none", beta=0.0, epsilon=0.2,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", bf16=False, fp16=False, gradient_checkpointing=False,
        model_init_kwargs={"dtype": "float32"}, shuffle_dataset=False, dataloader_num_workers=0,
        report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, log_completions=False,
    )
    return GRPOTrainer(model=str(model), reward_funcs=[alt.reward], args=config, train_dataset=dataset,
                       callbacks=[alt.callback()])


def versions() -> dict[str, str]:
    import accelerate
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "accelerate": accelerate.__version__}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (save_pretrained); default: a random-weight model of --preset")
    parser.add_argument("--preset", default="toy", help="config preset: model sizes (warmstart section) and task")
    parser.add_argument("--steps", type=int, default=8, help="measured steps of each trainer (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="steps of each trainer run first and not measured")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--num-generations", type=int, default=7, help="group size")
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("bench_vs_trl.py needs TRL: pip install -e '.[bench]'")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from datasets import Dataset

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else make_model(args.preset, tmp / "model", args.seed)
        per_step = step_prompts(args.preset, args.seed, args.warmup + args.steps, args.prompts)
        rows = [r for step in per_step for r in step]
        ours = our_trainer(model, args, tmp / "ours")
        alt = Alternate(ours)
        trainer = trl_trainer(model, Dataset.from_list(rows), alt, args, tmp / "trl")
        time_generate(trainer.model, alt.probe["trl"])
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    load_after = os.getloadavg()

    w = args.warmup
    step_s = {k: v[w:] for k, v in alt.times.items()}
    # A step costs more when one completion of the batch runs to max_completion_length (every sequence is
    # decoded and trained at that width): compare like with like too.
    full = {k: [t for t, n in zip(step_s[k], alt.positions[k][w:]) if n == args.max_completion_length] for k in step_s}
    summary = {k: {"seconds_per_step": median(step_s[k]),
                   "cpu_seconds_per_step": median(alt.cpu[k][w:]),
                   "tokens_per_second": median([n / t for n, t in zip(alt.tokens[k][w:], step_s[k])]),
                   "completion_tokens_per_step": median(alt.tokens[k][w:]),
                   "generate_seconds_per_step": median(alt.generate[k][w:]),
                   "rest_seconds_per_step": median([t - g for t, g in zip(step_s[k], alt.generate[k][w:])]),
                   "generate_calls_per_step": median(alt.generate_calls[k][w:]),
                   "steps": [round(x, 4) for x in step_s[k]],
                   "longest_completion": alt.positions[k][w:],
                   "full_length_steps": len(full[k]),
                   "seconds_per_full_length_step": median(full[k])}
               for k in ("trl", "ours")}
    result = {
        "ratio_ours_over_trl": summary["ours"]["seconds_per_step"] / summary["trl"]["seconds_per_step"],
        "ratio_per_step_median": median([o / t for o, t in zip(step_s["ours"], step_s["trl"])]),
        "ratio_full_length_steps": summary["ours"]["seconds_per_full_length_step"] / summary["trl"]["seconds_per_full_length_step"],
        "ratio_cpu_ours_over_trl": summary["ours"]["cpu_seconds_per_step"] / summary["trl"]["cpu_seconds_per_step"],
        "ratio_tokens_per_second_ours_over_trl": summary["ours"]["tokens_per_second"] / summary["trl"]["tokens_per_second"],
        "seconds_per_step": {k: summary[k]["seconds_per_step"] for k in summary},
        "tokens_per_second": {k: summary[k]["tokens_per_second"] for k in summary},
        "trl": summary["trl"], "ours": summary["ours"],
        "same_prompts_per_step": alt.trl_prompts == alt.our_prompts == [sorted({r["prompt"] for r in s}) for s in per_step],
        "config": {"model": str(args.model or f"random weights, preset {args.preset}"), "preset": args.preset,
                   "prompts_per_step": args.prompts, "num_generations": args.num_generations,
                   "max_completion_length": args.max_completion_length, "measured_steps": args.steps,
                   "warmup_steps": args.warmup, "loss_type": "dr_grpo", "beta": 0.0, "scale_rewards": "none",
                   "optimizer_steps_per_batch": 1, "dtype": "float32", "threads": args.threads},
        "versions": versions(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
        "wall_seconds": wall,
    }
    for k, label in (("trl", "TRL "), ("ours", "ours")):
        r = summary[k]
        print(f"{label}  {r['seconds_per_step']:.3f} s/step  (CPU {r['cpu_seconds_per_step']:.3f} s)  "
              f"{r['tokens_per_second']:.0f} completion tok/s  "
              f"(generate {r['generate_seconds_per_step']:.3f} s, rest {r['rest_seconds_per_step']:.3f} s, "
              f"{r['completion_tokens_per_step']:.0f} completion tokens/step)")
    print(f"ours / TRL = {result['ratio_ours_over_trl']:.3f} (median of per-step ratios {result['ratio_per_step_median']:.3f}, "
          f"CPU time {result['ratio_cpu_ours_over_trl']:.3f}; steps decoding to max_completion_length "
          f"{result['ratio_full_length_steps']:.3f}, {summary['trl']['full_length_steps']} TRL / "
          f"{summary['ours']['full_length_steps']} ours)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
