"""Checkpoints under SIGKILL, pruning and a full disk: real processes, files and a real tmpfs."""

import subprocess
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from critique_rl.checkpoint import latest_checkpoint


def test_incomplete_checkpoints_are_ignored_on_resume(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, "train.steps=2")
    # What a SIGKILL during saving leaves: a temporary folder, or a final name without trainer state.
    (run / "checkpoints" / ".tmp-step-000003").mkdir()
    (run / "checkpoints" / "step-000004").mkdir()
    (run / "checkpoints" / "step-000004" / "config.json").write_text("{")
    # And in the log: a step logged after the last checkpoint, then a line cut short.
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "stale": true}\n{"step": 4, "rew')
    assert latest_checkpoint(run).name == "step-000002"
    cli("train", "--resume", str(run), "train.steps=3")
    assert [r["step"] for r in cli.rows(run)] == [0, 1, 2, 3] and "stale" not in cli.rows(run)[-1]


def test_sigkill_at_random_moments_never_leaves_an_unloadable_newest_checkpoint(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, "train.steps=1")
    for delay in [1.5, 2.0, 2.5, 3.0, 3.5]:
        # Checkpoint every step so that many kills land while one is being written.
        proc = cli.popen("train", "--resume", str(run), "train.steps=400", "train.save_every=1", "train.keep_last=2",
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        newest = latest_checkpoint(run)
        state = torch.load(newest / "trainer_state.pt", weights_only=False)
        assert state["step"] == int(newest.name.split("-")[1])
    cli("train", "--resume", str(run), f"train.steps={state['step'] + 1}")
    assert cli.rows(run)[-1]["step"] == state["step"] + 1


def test_old_checkpoints_are_pruned(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, "train.steps=4", "train.save_every=1", "train.keep_last=2")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003", "step-000004"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: room for two tiny checkpoints, not three."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_during_checkpointing_is_reported_and_the_previous_checkpoint_kept(cli, small_disk):
    run = small_disk / "run"
    result = cli.train(run, "train.steps=6", "train.save_every=1", "train.keep_last=2", check_rc=4)
    assert "could not write the checkpoint of step" in result.stderr and "is intact" in result.stderr
    assert "Traceback" not in result.stderr
    kept = latest_checkpoint(run)
    assert kept is not None and not list((run / "checkpoints").glob(".tmp-*"))
    AutoModelForCausalLM.from_pretrained(kept)           # the previous checkpoint still loads
