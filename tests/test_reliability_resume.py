"""An interrupted and resumed run is the uninterrupted run: real processes, real checkpoints."""

import json

import pytest


def test_resume_reproduces_the_uninterrupted_run(cli, tmp_path):
    # Rewards are 0 on the tiny preset (its warm start is 20 steps): the entropy bonus gives the
    # loss and the updates that a wrong model or optimizer restore would change. Two mini-batches
    # draw from the refinement RNG, evaluations between steps run the policy between checkpoints.
    args = ["loss.entropy_coef=0.01", "train.mini_batches=2", "eval.every=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli.train(straight, *args, "train.steps=4")
    cli.train(resumed, *args, "train.steps=2")
    cli("train", "--resume", str(resumed), "train.steps=4")
    a, b = cli.rows(straight), cli.rows(resumed)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    assert all(r["grad_norm"] > 0 and r["loss"] != 0 for r in a[1:])
    for x, y in zip(a[3:], b[3:]):
        for key, value in x.items():
            if not key.startswith("time/") and isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    text = lambda run: [(s["step"], [t["text"] for t in s["attempts"]]) for s in
                        map(json.loads, (run / "samples.jsonl").read_text().splitlines()) if s["step"] > 2]
    assert text(straight) == text(resumed)


def test_an_alarm_streak_spanning_the_interruption_survives_the_resume(cli, tmp_path):
    # 4-token completions cannot hold an answer: reward 0 everywhere, so every group has zero variance.
    run = tmp_path / "run"
    cli.train(run, "train.steps=2", "rollout.max_completion_length=4", "train.alarm_zero_std_patience=3")
    cli("train", "--resume", str(run), "train.steps=3")
    assert [r["frac_reward_zero_std"] for r in cli.rows(run)[1:]] == [1.0, 1.0, 1.0]
    assert [r.get("alarm/zero_std") for r in cli.rows(run)[1:]] == [None, None, 1.0]
