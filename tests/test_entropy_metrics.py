"""Trainer-level entropy metrics: entropy/delta across a resume, entropy/probe at evaluations."""

import json
import math
from itertools import pairwise

import pytest

from critique_rl.config import load_config
from critique_rl.metrics import read_metrics
from critique_rl.pipeline import run_training
from critique_rl.trainer import Trainer


def tiny_grpo(model_dir, *overrides):
    return load_config("tiny", [f"model.name_or_path={model_dir}", "method=grpo", "train.save_every=1",
                                "eval.every=1", "eval.probe_prompts=4", "task.eval_easy=4", "task.eval_hard=4",
                                "eval.pass_n=1", "rollout.max_completion_length=16", *overrides])


def test_entropy_delta_is_the_change_from_the_previous_step_across_a_resume(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tiny_grpo(tiny_model_dir, "train.steps=2"), run_dir, show_progress=False)
    trainer = Trainer(tiny_grpo(tiny_model_dir, "train.steps=3"), run_dir, show_progress=False)
    assert trainer.resume() == 2
    trainer.train()                                     # step 3's delta needs step 2's entropy from the checkpoint
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and "entropy/delta" not in rows[1]
    for before, row in pairwise(rows[1:]):
        assert row["entropy/delta"] == pytest.approx(row["entropy"] - before["entropy"], abs=1e-12)


def test_probe_entropy_is_logged_at_each_evaluation_and_depends_on_weights_only(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_grpo(tiny_model_dir, "train.steps=1"), tmp_path / "run", show_progress=False)
    first = trainer.probe_entropy()
    # A random tiny policy is close to uniform over the vocabulary: entropy just under log V.
    assert math.log(len(trainer.tokenizer)) - 0.1 < first <= math.log(len(trainer.tokenizer))
    assert trainer.probe_entropy() == first             # greedy: no sampling noise
    final = trainer.train()
    rows = read_metrics(tmp_path / "run")
    assert rows[0]["entropy/probe"] == pytest.approx(first) and "entropy/probe" in rows[1]
    assert final["entropy/probe"] == json.loads((tmp_path / "run" / "final_eval.json").read_text())["entropy/probe"]
    off = Trainer(tiny_grpo(tiny_model_dir, "eval.probe_prompts=0"), tmp_path / "off", show_progress=False)
    assert "entropy/probe" not in off.evaluate()


def test_entropy_metrics_describe_the_sampling_policy_with_several_mini_batches(tiny_model_dir, tmp_path):
    import torch

    from critique_rl import algos

    # Two optimizer steps per rollout batch, with a learning rate that moves the policy visibly: the
    # second mini-batch is trained after the first step, yet its entropy statistics must be the
    # sampling policy's, as the first mini-batch's are.
    trainer = Trainer(tiny_grpo(tiny_model_dir, "train.mini_batches=2", "train.learning_rate=0.05",
                                "train.warmup_steps=0", "train.samples_per_step=4"), tmp_path / "run",
                      show_progress=False)
    problems, first_group = trainer.dist.shard(trainer.task.train_batch(0, trainer.cfg.train.prompts_per_step))
    members = trainer.collect(problems, first_group).members
    for i, m in enumerate(members):        # a random policy solves nothing: give every group reward variance
        m.reward = float(i % 2)
    initial = torch.tensor([not m.is_refinement for m in members])

    def policy_stats():
        with torch.no_grad():
            logp, entropy, mask = trainer.forward(trainer.model, members)
        initial_mask = mask * initial.float()[:, None]
        return logp, entropy, mask, initial_mask

    logp, entropy, mask, initial_mask = policy_stats()          # the sampling policy, one forward over all
    metrics = trainer.optimize(members)
    advantages = torch.tensor([m.advantage for m in members])
    expected = algos.entropy_stats(entropy, initial_mask)
    assert metrics["entropy"] == pytest.approx(expected["entropy/token_mean"], rel=1e-5)
    assert metrics["entropy/p80"] == pytest.approx(expected["entropy/p80"], rel=1e-5)
    assert metrics["entropy/cov_logp_adv"] == pytest.approx(
        algos.logp_advantage_cov(logp, advantages, initial_mask), rel=1e-4, abs=1e-7)
    # samples.jsonl's token log-probs are the sampling policy's too
    logged = [(row, m) for row, m in enumerate(members) if m.token_logprobs is not None]
    assert {m.group for _, m in logged} == {0, 1, 2, 3}
    for row, m in logged:
        assert m.token_logprobs == pytest.approx(logp[row][mask[row] > 0].tolist(), abs=1e-4)
    # the update moved the policy enough that statistics measured after it would differ
    _, after, _, _ = policy_stats()
    moved = algos.entropy_stats(after, initial_mask)["entropy/token_mean"]
    assert abs(moved - expected["entropy/token_mean"]) > 1e-3
