"""Non-finite losses and silent failures: real NaN weights, a real divergence, real alarms."""

import torch

from critique_rl.alarms import AlarmSettings, check_alarms


def test_a_non_finite_loss_skips_the_optimizer_step(warm_policy, tmp_path):
    from critique_rl.config import load_config
    from critique_rl.trainer import Trainer

    cfg = load_config("tiny", [f"model.name_or_path={warm_policy}", "loss.entropy_coef=0.1"])
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    rollout = trainer.collect(trainer.task.train_batch(0, cfg.train.prompts_per_step))
    params = dict(trainer.model.named_parameters())
    name, poisoned = next(iter(params.items()))
    with torch.no_grad():
        poisoned[0, 0] = float("nan")                   # a real NaN weight: the forward pass yields NaN
    before = {n: p.detach().clone() for n, p in params.items() if n != name}
    metrics = {**rollout.metrics, **trainer.optimize(rollout.members)}
    assert metrics["train/skipped_nonfinite"] == 1.0
    assert all(torch.equal(before[n], p) for n, p in params.items() if n != name)   # nothing was applied
    metrics["step"] = 1
    for _ in range(2):
        trainer.watch(metrics)
    assert trainer.bad_steps == 2


def test_diverged_weights_stop_the_run_with_a_clear_message_and_the_run_can_go_on(cli, tmp_path):
    # A learning rate of 1e30 sends the weights to ~1e29 after one step: the next sampling step
    # sees non-finite probabilities, before the first checkpoint (step 2).
    run = tmp_path / "run"
    result = cli.train(run, "train.steps=20", "train.learning_rate=1e30", "train.warmup_steps=1", "loss.entropy_coef=0.1",
                       check_rc=3)
    assert "probabilities are not finite" in result.stderr and "lower train.learning_rate" in result.stderr
    assert f"from step 0 (no checkpoint yet) with: critique-rl train --resume {run}" in result.stderr
    assert "Traceback" not in result.stderr
    # The logged step 1 and the missing checkpoint must not block the run: it starts over.
    result = cli("train", "--resume", str(run), "train.learning_rate=1e-4", "train.steps=2")
    assert "no checkpoint yet: training it from step 0" in result.stdout
    assert [r["step"] for r in cli.rows(run)] == [0, 1, 2]


def test_non_finite_steps_in_a_row_stop_the_run(cli, tmp_path):
    # An entropy coefficient of 1e39 overflows float32: the loss is inf, every step is skipped,
    # the weights never change, so sampling goes on and only the streak stops the run.
    run = tmp_path / "run"
    result = cli.train(run, "train.steps=5", "loss.entropy_coef=1e39", "train.max_bad_steps=2", check_rc=3)
    assert [r.get("train/skipped_nonfinite") for r in cli.rows(run)] == [None, 1.0, 1.0]
    assert "warning: step 2: non-finite loss or gradient, optimizer step skipped" in result.stdout
    assert "2 steps in a row (up to step 2) had a NaN or inf loss or gradient" in result.stderr
    assert "Traceback" not in result.stderr


def test_alarms_fire_in_the_log_and_the_metrics(cli, tmp_path):
    run = tmp_path / "run"
    result = cli.train(run, "train.steps=2", "rollout.max_completion_length=4", "train.entropy_max=0.001")
    assert all(r.get("alarm/truncation") == 1.0 and r.get("alarm/entropy_explosion") == 1.0 for r in cli.rows(run)[1:])
    assert "truncation zeroes their reward" in result.stdout


def test_alarm_rules():
    settings = AlarmSettings(truncation_ratio=0.5, zero_std_patience=3, entropy_min=0.01, entropy_max=2.0)
    base = {"reward": 0.4, "completions/clipped_ratio": 0.1, "entropy": 0.5}
    assert check_alarms(base, 0, settings) == []
    assert check_alarms({**base, "completions/clipped_ratio": 0.6}, 0, settings) == ["truncation"]
    assert check_alarms(base, 3, settings) == ["zero_std"]
    assert check_alarms({**base, "entropy": 0.001}, 0, settings) == ["entropy_collapse"]
    assert check_alarms({**base, "entropy": 3.0, "reward": 0.0}, 0, settings) == ["zero_reward", "entropy_explosion"]
