"""SIGINT and SIGTERM sent to a real training process."""

import signal
import subprocess
import time

import pytest
import torch

from critique_rl.checkpoint import latest_checkpoint


def wait_for_rows(cli, run, n: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(cli.rows(run)) >= n):
        time.sleep(0.2)


@pytest.mark.parametrize("sig, code, mode", [(signal.SIGINT, 130, "sync"), (signal.SIGTERM, 143, "sync"),
                                             (signal.SIGINT, 130, "async")])
def test_signal_finishes_the_step_checkpoints_and_says_how_to_resume(cli, tmp_path, sig, code, mode):
    # async: the background refiner's pending groups are drained into the checkpoint first
    run = tmp_path / "run"
    proc = cli.popen(*cli.train_args(run, "train.steps=500", "train.save_every=1000", f"refine.mode={mode}"),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_rows(cli, run, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"critique-rl train --resume {run}" in err and "Traceback" not in err
    last = cli.rows(run)[-1]["step"]
    assert latest_checkpoint(run).name == f"step-{last:06d}"
    if mode == "async":     # the tiny preset's groups all fail: the last step's are in the checkpoint
        state = torch.load(latest_checkpoint(run) / "trainer_state.pt", weights_only=False)
        assert [g.step for g in state["delayed_groups"]] == [last - 1] * 4
    cli("train", "--resume", str(run), f"train.steps={last + 1}")
    assert cli.rows(run)[-1]["step"] == last + 1


def test_a_second_sigint_exits_at_once(cli, tmp_path):
    run = tmp_path / "run"
    # 128 prompts x 6 samples a step: the step takes seconds even on a quiet machine, so the
    # second signal lands inside it (it is abandoned there, so the test does not wait for it).
    proc = cli.popen(*cli.train_args(run, "train.steps=50", "train.prompts_per_step=128", "rollout.num_generations=6"),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_rows(cli, run, 1)
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:
        if line.startswith("received SIGINT"):
            break
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - sent < 10, err[-2000:]
    assert "interrupted" in err and "checkpoint saved" not in err and "Traceback" not in err
    assert [r["step"] for r in cli.rows(run)] == [0]            # the step in progress was abandoned


def signal_when(proc: subprocess.Popen, marker: str, sig: int) -> str:
    """Send ``sig`` as soon as ``proc`` prints ``marker`` on a line; returns its stderr after it exits."""
    for line in proc.stdout:
        if line.strip() == marker:
            proc.send_signal(sig)
            break
    _, err = proc.communicate(timeout=120)
    return err


# 6,000 held-out problems: each evaluation lasts seconds, so the signal lands inside it.
LONG_EVAL = ("task.eval_easy=3000", "task.eval_hard=3000")


def test_a_signal_during_the_evaluation_before_step_1_stops_it_at_once_with_the_resume_hint(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli.popen(*cli.train_args(run, "train.steps=1", *LONG_EVAL), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = signal_when(proc, "evaluation before step 1", signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    assert err.splitlines()[-1] == (f"critique-rl train: stopped during the evaluation before step 1; nothing to save yet. "
                                    f"Resume with: critique-rl train --resume {run}")
    assert not (run / "metrics.jsonl").exists() and latest_checkpoint(run) is None
    result = cli("train", "--resume", str(run), "task.eval_easy=8", "task.eval_hard=8")
    assert f"{run} has no checkpoint yet: training it from step 0" in result.stdout
    assert [r["step"] for r in cli.rows(run)] == [0, 1]


def test_a_signal_during_the_final_evaluation_stops_it_at_once_and_the_resume_redoes_only_it(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli.popen(*cli.train_args(run, "train.steps=1", *LONG_EVAL), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = signal_when(proc, "final evaluation after step 1", signal.SIGINT)
    assert proc.returncode == 130, err[-2000:]
    assert err.splitlines()[-1] == (f"critique-rl train: stopped during the final evaluation after step 1; checkpoint saved. "
                                    f"Resume with: critique-rl train --resume {run}")
    assert latest_checkpoint(run).name == "step-000001" and not (run / "final_eval.json").exists()
    result = cli("train", "--resume", str(run), "task.eval_easy=8", "task.eval_hard=8")
    assert f"resumed {run} at step 1" in result.stdout
    assert [r["step"] for r in cli.rows(run)] == [0, 1] and (run / "final_eval.json").is_file()
