"""SIGINT and SIGTERM sent to a real training process."""

import signal
import subprocess
import time

import pytest

from critique_rl.checkpoint import latest_checkpoint


def wait_for_rows(cli, run, n: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and len(cli.rows(run)) >= n):
        time.sleep(0.2)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_checkpoints_and_says_how_to_resume(cli, tmp_path, sig, code):
    run = tmp_path / "run"
    proc = cli.popen(*cli.train_args(run, "train.steps=500", "train.save_every=1000"),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_rows(cli, run, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"critique-rl train --resume {run}" in err and "Traceback" not in err
    last = cli.rows(run)[-1]["step"]
    assert latest_checkpoint(run).name == f"step-{last:06d}"
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
