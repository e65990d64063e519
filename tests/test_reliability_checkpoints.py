"""Checkpoints under SIGKILL, damage, pruning and a full disk: real processes, files and a real tmpfs."""

import errno
import json
import os
import shutil
import subprocess
import time

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from critique_rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    problem,
    resume_point,
    save_checkpoint,
    write_manifest,
)
from critique_rl.config import config_from_dict, load_config
from critique_rl.modeling import build_char_tokenizer, build_tiny_model
from critique_rl.pipeline import run_training


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


def fill(disk) -> None:
    """Take every free byte of ``disk`` with one file."""
    with (disk / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_full_disk_while_appending_the_logs_exits_like_a_failed_checkpoint(cli, small_disk):
    run = small_disk / "run"
    cli.train(run, "train.steps=2")                                 # checkpoint step-000002
    proc = cli.popen("train", "--resume", str(run), "train.steps=500", "train.save_every=1000",
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(cli.rows(run)) < 5:
        time.sleep(0.2)
    fill(small_disk)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err[-2000:]
    step = cli.rows(run)[-1]["step"] + 1            # samples.jsonl, then metrics.jsonl, of this step; either can fail
    lines = [f"critique-rl train: error: could not append step {step} to {run / name}: [Errno 28] No space left on device; "
             f"the previous checkpoint {run / 'checkpoints' / 'step-000002'} is intact" for name in ("samples.jsonl", "metrics.jsonl")]
    assert err.splitlines()[-1] in lines and "Traceback" not in err
    for name in ("metrics.jsonl", "samples.jsonl"):             # cut back to whole lines: every one parses
        assert all(json.loads(line) for line in (run / name).read_text().splitlines())
    (small_disk / "filler").unlink()
    cli("train", "--resume", str(run), f"train.steps={step}")
    assert [r["step"] for r in cli.rows(run)] == list(range(step + 1))


def truncate(path, size: int) -> int:
    """Cut ``path`` to ``size`` bytes, as a crash of the file system does; returns its former size."""
    before = path.stat().st_size
    os.truncate(path, size)
    return before


def test_a_truncated_newest_checkpoint_is_passed_over_with_a_warning(cli, tmp_path):
    # The entropy bonus and two mini-batches make a wrong restore change the losses (see test_reliability_resume).
    args = ["loss.entropy_coef=0.01", "train.mini_batches=2", "train.steps=4"]
    straight = tmp_path / "straight"
    cli.train(straight, *args)          # uninterrupted: checkpoints at steps 2 and 4
    expected = cli.rows(straight)
    for name in ["model.safetensors", "trainer_state.pt"]:
        run = tmp_path / name
        shutil.copytree(straight, run)
        size = truncate(run / "checkpoints" / "step-000004" / name, 1000)
        result = cli("train", "--resume", str(run), *args)
        assert result.stderr.splitlines()[0] == (
            f"warning: skipping broken checkpoint step-000004 ({name} is 1,000 bytes, manifest.json says {size:,}); "
            "resuming from step-000002 instead")
        assert f"resumed {run} at step 2" in result.stdout
        # Steps 3 and 4 trained again reproduce the uninterrupted run, and their checkpoint is whole again.
        for x, y in zip(expected, cli.rows(run), strict=True):
            for key, value in x.items():
                if not key.startswith("time/") and isinstance(value, float):
                    assert y[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (name, x["step"], key)
        assert problem(run / "checkpoints" / "step-000004", hashes=True) is None


def test_a_run_whose_checkpoints_are_all_broken_is_kept_and_the_error_says_what_to_do(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, "train.steps=2")
    size = truncate(run / "checkpoints" / "step-000002" / "trainer_state.pt", 10)
    result = cli("train", "--resume", str(run), check_rc=4)
    root = run / "checkpoints"
    assert result.stderr.splitlines()[0] == (
        f"critique-rl train: error: no usable checkpoint in {root}: step-000002 (trainer_state.pt is 10 bytes, "
        f"manifest.json says {size:,}); to train the run again from step 0, move {root} out of {run} and run: "
        f"critique-rl train --resume {run}")
    assert "Traceback" not in result.stderr
    # The pipeline's run_training, which starts over a run without checkpoints, keeps this one too
    # (unfinished, as if stopped before its final evaluation).
    (run / "final_eval.json").unlink()
    cfg = config_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        run_training(cfg, run, show_progress=False)
    assert [r["step"] for r in cli.rows(run)] == [0, 1, 2] and (root / "step-000002").is_dir()
    # The advice works: without the folder, --resume trains the run from step 0.
    root.rename(tmp_path / "broken-checkpoints")
    result = cli("train", "--resume", str(run))
    assert f"{run} has no checkpoint yet: training it from step 0" in result.stdout
    assert [r["step"] for r in cli.rows(run)] == [0, 1, 2]


def test_the_manifest_catches_truncation_a_changed_byte_and_a_missing_file(tmp_path):
    ckpt = tmp_path / "step-000001"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (ckpt / "trainer_state.pt").write_bytes(b"state")
    write_manifest(ckpt)
    assert problem(ckpt, hashes=True) is None
    (ckpt / "model.safetensors").write_bytes(bytes(range(256)) * 3 + bytes(255) + b"x")     # same size, one byte differs
    assert problem(ckpt) is None                                 # sizes only: the cheap check used when listing
    assert problem(ckpt, hashes=True) == "model.safetensors does not match its sha256 in manifest.json"
    truncate(ckpt / "model.safetensors", 3)
    assert problem(ckpt) == "model.safetensors is 3 bytes, manifest.json says 1,024"
    (ckpt / "model.safetensors").unlink()
    assert problem(ckpt) == "model.safetensors is missing"
    (ckpt / "manifest.json").write_text('{"files": ')
    assert problem(ckpt).startswith("manifest.json is unreadable (JSONDecodeError: ")
    # A checkpoint written before manifests existed: trusted when it holds its trainer state.
    (ckpt / "manifest.json").unlink()
    assert problem(ckpt) is None
    (ckpt / "trainer_state.pt").unlink()
    assert problem(ckpt) == "it has neither manifest.json nor trainer_state.pt"


def test_pruning_never_keeps_a_broken_checkpoint_in_place_of_a_complete_one(tmp_path):
    run, tok = tmp_path / "run", build_char_tokenizer()
    model = build_tiny_model(load_config("tiny").warmstart, tok, seed=0)
    save = lambda step, keep_last: save_checkpoint(run, step, model, tok, {"step": step}, keep_last)
    save(2, keep_last=2)
    truncate(save(4, keep_last=2) / "model.safetensors", 1000)
    # Resumed from step 2 with save_every=1, keep_last=1: step 3 is the newest complete checkpoint.
    save(3, keep_last=1)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    assert latest_checkpoint(run).name == "step-000003"
    assert resume_point(run)[0].name == "step-000003"
