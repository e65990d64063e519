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
