"""The real-math path on CPU: the shared data through config alone, the math-verify reward in
training, chat-template prompts with refinements trained under the plain question, evaluation
on benchmark files, LoRA, the sampler/trainer log-prob mismatch, and every preset validated."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from critique_rl.config import ConfigError, load_config
from critique_rl.tasks.math import MathTask, epoch_order
from tests.conftest import CHAT_TEMPLATE

ALL_BENCHMARKS = "gsm8k,math500,aime24,amc23,minerva_math"


@pytest.fixture(scope="module")
def long_chat_model(tmp_path_factory) -> Path:
    """Random tiny Qwen2 with a 1024-token context (real questions are long) and a ChatML template."""
    from critique_rl.modeling import build_char_tokenizer, build_tiny_model

    cfg = load_config("tiny", ["warmstart.max_position_embeddings=1024"]).warmstart
    path = tmp_path_factory.mktemp("long-chat-model")
    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    build_tiny_model(cfg, tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def math_overrides(shared_data: Path, model: Path, *extra: str) -> list[str]:
    return [f"model.name_or_path={model}", "task.name=math", f"data.train.path={shared_data}/gsm8k/train.jsonl",
            "data.train.answer_from=after_hashes", "data.train.solution_field=answer", "data.train.limit=12",
            "benchmarks.benchmarks=math500,amc23", f"benchmarks.data_root={shared_data}", "benchmarks.limit=3",
            "prompts.solve=math/solve.jinja", "prompts.refine=math/refine.jinja", "prompts.system=math/system.jinja",
            "critic.critique_type=ground_truth", "verifier.workers=1", "method=critique_grpo", "train.steps=2",
            "train.prompts_per_step=2", "rollout.num_generations=2", "rollout.max_completion_length=12",
            "eval.every=0", "eval.pass_n=2", "eval.pass_k=1", "eval.probe_prompts=2", *extra]


def test_all_shared_benchmarks_load_through_config_alone(shared_data, long_chat_model):
    cfg = load_config("tiny", math_overrides(shared_data, long_chat_model, f"benchmarks.benchmarks={ALL_BENCHMARKS}",
                                             "benchmarks.limit=0"))
    task = MathTask(cfg)
    sizes = {name: len(examples) for name, examples in task.eval_sets().items()}
    assert sizes == {"gsm8k": 1319, "math500": 500, "aime24": 30, "amc23": 40, "minerva_math": 272}
    assert all(ex.answer for examples in task.eval_sets().values() for ex in examples)
    task.close()


def test_training_batches_walk_the_data_in_seeded_epochs(shared_data, long_chat_model):
    task = MathTask(load_config("tiny", math_overrides(shared_data, long_chat_model)))
    epoch = [ex.row for step in range(6) for ex in task.train_batch(step, 2)]       # 12 examples, 2 per step
    assert sorted(epoch) == list(range(1, 13)), "one epoch shows every example once"
    assert [ex.row for ex in task.train_batch(7, 2)] == [ex.row for ex in task.train_batch(7, 2)]
    assert epoch_order(12, seed=0, epoch=0) != epoch_order(12, seed=0, epoch=1)
    assert task.reward(task.train_batch(0, 2), [f"so \\boxed{{{ex.answer}}}" for ex in task.train_batch(0, 2)]) == [1.0, 1.0]
    task.close()


def test_math_training_with_chat_template_trains_refinements_under_the_plain_question(shared_data, long_chat_model, tmp_path):
    from critique_rl.trainer import Trainer

    cfg = load_config("tiny", math_overrides(shared_data, long_chat_model, "refine.refine_trigger=always"))
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    generated = []
    generate = trainer.engine.generate
    trainer.engine.generate = lambda prompts, n, params: generated.append((prompts, out := generate(prompts, n, params))) or out
    problems = trainer.task.train_batch(0, 2)
    rollout = trainer.collect(problems)
    (solve_prompts, samples), (refine_prompts, refinements) = generated
    assert solve_prompts[0].startswith("<|im_start|>system\nYou are a helpful assistant.") and "\\boxed{}" in solve_prompts[0]
    assert solve_prompts[0].endswith("<|im_start|>assistant\n") and "**Critique**" in refine_prompts[0]
    refined = [m for m in rollout.members if m.is_refinement]
    assert refined, "refine_trigger always: every group gets a refinement"
    sampled_ids = [o[0].completion_ids for o in refinements]
    for m in refined:
        assert m.prompt_ids == samples[m.group][0].prompt_ids, "trained under the plain solve prompt"
        assert m.completion_ids in sampled_ids, "the very tokens that were sampled"
    trainer.task.close()
    trainer.task.metrics()  # the verifier counters of this check are not step 0's

    final = trainer.train()
    assert set(final) >= {"eval/math500_pass1", "eval/amc23_pass1", "eval/math500_pass@1", "step"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and "accuracy/train_all" in rows[-1]
    # The verifier's counters of each step, not running totals: step 0 scored the greedy evaluation
    # (3 MATH-500 + 3 AMC23 problems) and started the one worker; steps 1-2 their samples and refinements.
    assert [r["verifier/items"] for r in rows] == [6.0] + [4 + r["refine/critiques"] - r["refine/too_long"] for r in rows[1:]]
    assert [r["verifier/starts"] for r in rows] == [1.0, 0.0, 0.0]
    assert all(r["verifier/timeouts"] == r["verifier/errors"] == r["verifier/restarts"] == r["verifier/budget_skipped"] == 0
               and r["verifier/seconds"] > 0 for r in rows)


def test_math_with_the_rule_cot_critic_is_refused():
    with pytest.raises(ConfigError, match="chain-of-thought critiques only for the arithmetic task"):
        load_config("tiny", ["task.name=math"])


def test_eval_command_on_a_benchmark_file_writes_the_table_and_every_sample(shared_data, long_chat_model, tmp_path):
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "critique_rl.cli", "eval", "--config", "tiny", "--model", str(long_chat_model),
         "--benchmarks", "math500,aime24", "--out", str(out), f"benchmarks.data_root={shared_data}", "benchmarks.limit=3",
         "benchmarks.num_samples=2", "benchmarks.max_new_tokens=8", "prompts.solve=math/solve.jinja", "verifier.workers=1"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| benchmark | problems | greedy_pass@1 | mean@2 | pass@2 |" in result.stdout
    assert "| average | 6 |" in result.stdout
    rows = json.loads((out / "results.json").read_text())
    assert [r["benchmark"] for r in rows] == ["math500", "aime24", "average"]
    samples = [json.loads(line) for line in (out / "math500.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * (1 + 2) and {"completion", "reward", "correct", "answer", "row"} <= set(samples[0])


def test_lora_with_gradient_checkpointing_trains_adapters_and_resumes_from_them(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    from critique_rl.trainer import Trainer

    cfg = load_config("tiny", [f"model.name_or_path={tiny_model_dir}", "model.lora_r=4", "model.gradient_checkpointing=true", "train.steps=1",
                               "eval.every=0", "task.eval_easy=2", "task.eval_hard=2", "eval.pass_n=2", "eval.pass_k=1",
                               "loss.entropy_coef=0.01", "train.learning_rate=1e-2", "train.warmup_steps=1"])
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000001"
    assert (checkpoint / "adapter_config.json").is_file()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any(not torch.equal(before[n], after[n]) for n in before)

    resumed = Trainer(cfg, tmp_path / "run", show_progress=False)
    assert resumed.resume() == 1
    for n, p in resumed.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, after[n])


def test_sampler_logprobs_match_the_trainer_and_truncated_is_runs(tiny_model_dir, train_short):
    run = train_short("rollout.return_logprobs=true", "loss.tis_cap=2.0")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mismatch = [r["rollout/logp_mismatch"] for r in rows if "rollout/logp_mismatch" in r]
    assert len(mismatch) == 2 and all(0 <= m < 1e-4 for m in mismatch), mismatch


def test_every_preset_validates_without_downloading(tmp_path):
    # Offline, whatever the machine: the presets' hub datasets become warnings, not downloads.
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "critique_rl.cli", "check-config"], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).parents[1], env=offline)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: data.train: not checked: open-r1/OpenR1-Math-220k: Couldn't reach" in result.stdout
    for preset in ("qwen25-7b-paper", "qwen25-7b-official", "qwen3-8b-paper", "qwen3-8b-official", "toy", "tiny"):
        assert f"{preset}: ok" in result.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("inherit: qwen25-7b-paper\nprompts:\n  refine: arithmetic/solve.jinja\n  solve: nowhere.jinja\n"
                      "data:\n  train:\n    path: ./missing.jsonl\n")
    result = subprocess.run([sys.executable, "-m", "critique_rl.cli", "check-config", str(broken)],
                            capture_output=True, text=True, timeout=300, env=offline)
    assert result.returncode == 2
    assert "prompts.solve" in result.stdout and "nowhere.jinja" in result.stdout
    assert "error: data.train: ./missing.jsonl: data file does not exist" in result.stdout


def test_official_preset_differs_from_the_paper_preset_only_in_the_documented_knobs():
    from critique_rl.config import describe

    paper = {k: v for k, v, _, _ in describe(load_config("qwen25-7b-paper"))}
    official = {k: v for k, v, _, _ in describe(load_config("qwen25-7b-official"))}
    assert {k for k in paper if paper[k] != official[k]} == {
        "critic.reference", "critic.max_verdict_retries", "refine.refine_trigger", "refine.refinement_fallback",
        "refine.max_prompt_tokens", "loss.clip", "loss.scale_rewards", "loss.entropy_coef", "loss.std_unbiased",
        "loss.entropy_agg", "loss.refinement_weight"}


def test_inherit_cycles_are_reported(tmp_path):
    (tmp_path / "a.yaml").write_text(f"inherit: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"inherit: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="inherit cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_the_pipeline_refuses_the_math_task_instead_of_warm_starting_an_arithmetic_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "critique_rl.cli", "pipeline", "--config", "qwen25-7b-paper",
                             "--out", str(tmp_path / "p")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "critique-rl train" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p" / "warmstart").exists()
