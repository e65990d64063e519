"""Data parallelism on CPU: two gloo processes give the loss and the update of one process on the
same global batch, and `critique-rl train` runs under `accelerate launch` and `torchrun`."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_two_processes_compute_the_loss_and_update_of_one(tiny_model_dir, tmp_path):
    worker = str(ROOT / "tests" / "distributed_worker.py")
    run([sys.executable, worker, str(tiny_model_dir), str(tmp_path)], cwd=ROOT)
    run([str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs/accelerate/multi_cpu.yaml"),
         "--main_process_port", str(free_port()), worker, str(tiny_model_dir), str(tmp_path)], cwd=ROOT)

    one = json.loads((tmp_path / "losses-world1-rank0.json").read_text())
    for rank in (0, 1):
        two = json.loads((tmp_path / f"losses-world2-rank{rank}.json").read_text())
        for loss_type, losses in one.items():
            assert any(abs(x) > 1e-4 for x in losses), f"{loss_type}: the batches must carry a real loss"
            assert two[loss_type] == pytest.approx(losses, rel=1e-5, abs=1e-7), loss_type
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for loss_type in one:
        single = torch.load(tmp_path / f"weights-{loss_type}-world1-rank0.pt")
        ranks = [torch.load(tmp_path / f"weights-{loss_type}-world2-rank{r}.pt") for r in (0, 1)]
        for name, w in single.items():
            assert torch.equal(ranks[0][name], ranks[1][name]), f"{loss_type}: processes disagree on {name}"
            torch.testing.assert_close(ranks[0][name], w, rtol=1e-5, atol=1e-6, msg=lambda m: f"{loss_type} {name}: {m}")
        assert sum(float((single[n] - initial[n]).abs().sum()) for n in initial) > 0, "the updates moved the weights"


def test_train_command_under_torchrun(warm_policy, tmp_path):
    run_dir = tmp_path / "run"
    result = run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "critique_rl.cli",
                  "train", "--config", "tiny", "--out", str(run_dir), f"model.name_or_path={warm_policy}", "train.steps=2",
                  "train.prompts_per_step=4", "rollout.num_generations=3", "eval.every=2", "task.eval_easy=6",
                  "task.eval_hard=6", "eval.pass_n=2", "eval.pass_k=1", "train.save_every=2"], cwd=tmp_path)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2], "one process logs, once per step"
    # Both processes' groups are counted: 4 prompts x 3 samples, critiques summed over processes.
    assert all(r["refine/critiques"] <= 12 for r in rows[1:])
    assert (run_dir / "checkpoints" / "step-000002" / "trainer_state.pt").is_file()
    assert json.loads((run_dir / "final_eval.json").read_text())["step"] == 2
    assert "Traceback" not in result.stderr
