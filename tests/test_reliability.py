"""Runs that survive interruption, faults and bad input: real processes, signals and files."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from critique_rl.alarms import AlarmSettings, check_alarms
from critique_rl.checkpoint import latest_checkpoint

CLI = [sys.executable, "-m", "critique_rl.cli"]
TINY = ["eval.every=0", "train.save_every=2"]


def cli(*args, cwd: Path, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert result.returncode == check_rc, result.stderr[-3000:]
    return result


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ws")
    cli("warmstart", "--config", "tiny", "--out", str(out), cwd=out)
    return out / "warmstart"


def test_resume_reproduces_the_uninterrupted_run(warm, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cli("train", "--config", "tiny", "--out", str(straight), *TINY, f"model.name_or_path={warm}", "train.steps=4", cwd=tmp_path)
    cli("train", "--config", "tiny", "--out", str(resumed), *TINY, f"model.name_or_path={warm}", "train.steps=2", cwd=tmp_path)
    cli("train", "--resume", str(resumed), "train.steps=4", cwd=tmp_path)
    a, b = rows(straight), rows(resumed)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    for x, y in zip(a[3:], b[3:]):
        for key, value in x.items():
            if not key.startswith("time/") and isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    text = lambda run: [(s["step"], [t["text"] for t in s["attempts"]]) for s in
                        map(json.loads, (run / "samples.jsonl").read_text().splitlines()) if s["step"] > 2]
    assert text(straight) == text(resumed)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_checkpoints_and_says_how_to_resume(warm, tmp_path, sig, code):
    run = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=500",
                             "train.save_every=1000"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(rows(run)) >= 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"critique-rl train --resume {run}" in err and "Traceback" not in err
    last = rows(run)[-1]["step"]
    assert latest_checkpoint(run).name == f"step-{last:06d}"
    cli("train", "--resume", str(run), f"train.steps={last + 1}", cwd=tmp_path)
    assert rows(run)[-1]["step"] == last + 1


def test_incomplete_checkpoints_are_ignored_on_resume(warm, tmp_path):
    run = tmp_path / "run"
    cli("train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=2", cwd=tmp_path)
    # What a SIGKILL during saving leaves: a temporary folder, or a final name without trainer state.
    (run / "checkpoints" / ".tmp-step-000003").mkdir()
    (run / "checkpoints" / "step-000004").mkdir()
    (run / "checkpoints" / "step-000004" / "config.json").write_text("{")
    assert latest_checkpoint(run).name == "step-000002"
    cli("train", "--resume", str(run), "train.steps=3", cwd=tmp_path)
    assert [r["step"] for r in rows(run)] == [0, 1, 2, 3]


def test_sigkill_at_random_moments_never_leaves_an_unloadable_newest_checkpoint(warm, tmp_path):
    # Checkpoint every step so that many kills land while one is being written.
    run = tmp_path / "run"
    args = [f"model.name_or_path={warm}", "train.steps=400", "train.save_every=1", "train.keep_last=2"]
    cli("train", "--config", "tiny", "--out", str(run), *TINY, *args[:1], "train.steps=1", cwd=tmp_path)
    delays = [1.5, 2.0, 2.5, 3.0, 3.5]
    for delay in delays:
        proc = subprocess.Popen([*CLI, "train", "--resume", str(run), *args[1:]], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        newest = latest_checkpoint(run)
        state = torch.load(newest / "trainer_state.pt", weights_only=False)
        assert state["step"] == int(newest.name.split("-")[1])
    cli("train", "--resume", str(run), f"train.steps={state['step'] + 1}", cwd=tmp_path)
    assert rows(run)[-1]["step"] == state["step"] + 1


def test_old_checkpoints_are_pruned(warm, tmp_path):
    run = tmp_path / "run"
    cli("train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=4", "train.save_every=1",
        "train.keep_last=2", cwd=tmp_path)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003", "step-000004"]


def test_a_non_finite_loss_skips_the_optimizer_step(warm, tmp_path):
    from critique_rl.config import load_config
    from critique_rl.trainer import Trainer

    cfg = load_config("tiny", [f"model.name_or_path={warm}", "loss.entropy_coef=0.1"])
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    rollout = trainer.collect(trainer.source.train_batch(0, cfg.train.prompts_per_step))
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


def test_diverged_weights_stop_the_run_with_a_clear_message(warm, tmp_path):
    # A learning rate of 1e30 sends the weights to ~1e29 after one step: the next sampling step
    # sees non-finite probabilities.
    run = tmp_path / "run"
    result = cli("train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=20",
                 "train.learning_rate=1e30", "train.warmup_steps=1", "loss.entropy_coef=0.1", cwd=tmp_path, check_rc=3)
    assert "probabilities are not finite" in result.stderr and "lower train.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr


def test_alarms_fire_in_the_log_and_the_metrics(warm, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=2",
                 "rollout.max_completion_length=4", "train.entropy_max=0.001", cwd=tmp_path)
    assert all(r.get("alarm/truncation") == 1.0 and r.get("alarm/entropy_explosion") == 1.0 for r in rows(run)[1:])
    assert "truncation zeroes their reward" in result.stdout


def test_alarm_rules():
    settings = AlarmSettings(truncation_ratio=0.5, zero_std_patience=3, entropy_min=0.01, entropy_max=2.0)
    base = {"reward": 0.4, "completions/clipped_ratio": 0.1, "entropy": 0.5}
    assert check_alarms(base, 0, settings) == []
    assert check_alarms({**base, "completions/clipped_ratio": 0.6}, 0, settings) == ["truncation"]
    assert check_alarms(base, 3, settings) == ["zero_std"]
    assert check_alarms({**base, "entropy": 0.001}, 0, settings) == ["entropy_collapse"]
    assert check_alarms({**base, "entropy": 3.0, "reward": 0.0}, 0, settings) == ["zero_reward", "entropy_explosion"]


@pytest.mark.parametrize("args, message", [
    (["train.stpes=3"], "unknown key 'train.stpes' (did you mean train.steps?)"),
    (["train.steps=x"], "train.steps = 'x'; expected an integer"),
    (["model.name_or_path=/nonexistent/model"], "no config.json there"),
    (["prompts.refine=missing.jinja"], "template 'missing.jinja' not found"),
])
def test_bad_input_stops_with_one_clear_message_and_blocks_nothing(warm, tmp_path, args, message):
    run = tmp_path / "run"
    if not any(a.startswith("model.") for a in args):
        args = [f"model.name_or_path={warm}", *args]
    result = cli("train", "--config", "tiny", "--out", str(run), *TINY, *args, cwd=tmp_path, check_rc=2)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (run / "metrics.jsonl").exists()
    cli("train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=1", cwd=tmp_path)


def test_malformed_yaml_and_a_run_dir_without_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    result = cli("train", "--config", str(bad), "--out", str(tmp_path / "r"), cwd=tmp_path, check_rc=2)
    assert "bad.yaml: malformed YAML" in result.stderr and "Traceback" not in result.stderr
    result = cli("train", "--resume", str(tmp_path), cwd=tmp_path, check_rc=2)
    assert "no config.yaml there" in result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: room for two tiny checkpoints, not three."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_during_checkpointing_is_reported_and_the_previous_checkpoint_kept(warm, tmp_path, small_disk):
    run = small_disk / "run"
    result = cli("train", "--config", "tiny", "--out", str(run), *TINY, f"model.name_or_path={warm}", "train.steps=6",
                 "train.save_every=1", "train.keep_last=2", cwd=tmp_path, check_rc=4)
    assert "could not write the checkpoint of step" in result.stderr and "is intact" in result.stderr
    assert "Traceback" not in result.stderr
    kept = latest_checkpoint(run)
    assert kept is not None and not list((run / "checkpoints").glob(".tmp-*"))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(kept)           # the previous checkpoint still loads
