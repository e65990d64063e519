"""``log.report_to``: real TensorBoard, W&B (offline) and MLflow runs read back with each library's
own reader and compared with metrics.jsonl; config errors; a missing library; an interrupted
and resumed run closing and continuing its backend runs."""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from critique_rl.config import ConfigError, load_config
from critique_rl.interrupts import TrainingInterrupted
from critique_rl.tracking import mlflow_name

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")

SHORT = ["method=critique_grpo", "train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=3",
         "eval.every=1", "task.eval_easy=8", "task.eval_hard=8", "eval.pass_n=2", "eval.pass_k=1",
         "rollout.max_completion_length=24", "eval.probe_prompts=4"]


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """W&B offline and silent, its settings, cache and data folders in a temporary directory."""
    root = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(root / var.lower()))
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield root


@pytest.fixture(scope="module")
def tracked_run(tiny_model_dir, tmp_path_factory, wandb_env) -> Path:
    """One 2-step Critique-GRPO training reporting to all three backends at once."""
    from critique_rl.pipeline import run_training

    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    cfg = load_config("tiny", [f"model.name_or_path={tiny_model_dir}", *SHORT,
                               "log.report_to=tensorboard,wandb,mlflow", "log.project=critique-rl-test"])
    run_training(cfg, run_dir, show_progress=False)
    return run_dir


def jsonl_series(run_dir: Path) -> dict[str, dict[int, float]]:
    """metric -> {step: value} of metrics.jsonl and final_eval.json, nulls left out (as the backends do)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows.append(json.loads((run_dir / "final_eval.json").read_text()))
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and value is not None:
                series.setdefault(key, {})[row["step"]] = float(value)
    return series


def assert_same_series(got: dict[str, dict[int, float]], want: dict[str, dict[int, float]], rel: float) -> None:
    assert sorted(got) == sorted(want)
    for key, by_step in want.items():
        assert sorted(got[key]) == sorted(by_step), key
        for step, value in by_step.items():
            assert got[key][step] == pytest.approx(value, rel=rel, abs=1e-7), (key, step)


# ---------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_event_files_hold_every_metric_of_metrics_jsonl(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    got = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    want = jsonl_series(tracked_run)
    assert "eval/hard_pass1" in got and sorted(got["eval/hard_pass1"]) == [0, 1, 2]
    assert "eval/hard_pass@1" in got                     # the final evaluation, at the last step
    assert_same_series(got, want, rel=1e-6)              # event files store float32
    hparams = acc.PluginTagToContent("hparams")
    assert any(b"train.steps" in content for content in hparams.values())
    assert "config/text_summary" in acc.Tags()["tensors"]


# ---------------------------------------------------------------------------------------- W&B
def read_wandb_records(path: Path) -> list:
    """Records of a .wandb file: LevelDB log framing (32 KiB blocks, 7-byte chunk headers) after a
    7-byte W&B header, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:                     # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                              # FULL or LAST chunk: the record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_the_config_and_every_metric(tracked_run):
    run_id = json.loads((tracked_run / "tracking.json").read_text())["wandb"]
    [run_file] = (tracked_run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    records = read_wandb_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "exit" in kinds

    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "critique-rl-test" and run.display_name == "run"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["steps"] == 2 and config["log"]["report_to"] == "tensorboard,wandb,mlflow"

    got: dict[str, dict[int, float]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for key, value in row.items():
                if key != "step" and not key.startswith("_"):
                    got.setdefault(key, {})[row["step"]] = value
    assert_same_series(got, jsonl_series(tracked_run), rel=1e-12)
    [exit_record] = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


# ---------------------------------------------------------------------------------------- MLflow
def mlflow_client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'mlflow' / 'mlflow.db'}")


def mlflow_series(client, run_id: str) -> dict[str, dict[int, float]]:
    run = client.get_run(run_id)
    return {key: {m.step: m.value for m in client.get_metric_history(run_id, key)} for key in run.data.metrics}


def test_mlflow_run_holds_the_config_and_every_metric(tracked_run):
    client = mlflow_client(tracked_run)
    experiment = client.get_experiment_by_name("critique-rl-test")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == json.loads((tracked_run / "tracking.json").read_text())["mlflow"]
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "2" and run.data.params["log.report_to"] == "tensorboard,wandb,mlflow"
    want = {mlflow_name(k): v for k, v in jsonl_series(tracked_run).items()}
    assert "eval/hard_pass_at_1" in want and "eval/hard_pass1" in want      # '@' is not allowed in MLflow names
    assert_same_series(mlflow_series(client, run.info.run_id), want, rel=1e-12)


# ---------------------------------------------------------------------------------------- interruption
def test_an_interrupted_run_closes_its_backends_and_its_resume_continues_them(tiny_model_dir, tmp_path, wandb_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from critique_rl.trainer import Trainer

    run_dir = tmp_path / "run"
    cfg = load_config("tiny", [f"model.name_or_path={tiny_model_dir}", *SHORT, "eval.every=0", "eval.probe_prompts=0",
                               "log.report_to=tensorboard,mlflow", "train.save_every=1"])
    trainer = Trainer(cfg, run_dir, show_progress=False)
    step = trainer.step

    def step_then_sigterm():
        metrics = step()
        os.kill(os.getpid(), signal.SIGTERM)      # handled by GracefulStop: finish the step, checkpoint, stop
        return metrics

    trainer.step = step_then_sigterm
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    client = mlflow_client(run_dir)
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert client.get_run(run_id).info.status == "KILLED"
    assert sorted(mlflow_series(client, run_id)["reward"]) == [1]
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward")] == [1]     # flushed at once, not after flush_secs

    resumed = Trainer(cfg, run_dir, show_progress=False)
    assert resumed.resume() == 1
    resumed.train()
    assert json.loads((run_dir / "tracking.json").read_text())["mlflow"] == run_id      # the same MLflow run
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(mlflow_series(client, run_id)["reward"]) == [1, 2]
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward")] == [1, 2]


# ---------------------------------------------------------------------------------------- errors
def test_backend_names_are_parsed_and_checked():
    cfg = load_config("tiny", ["log.report_to= TensorBoard, jsonl,wandb,tensorboard"])
    assert cfg.log.backends() == ["jsonl", "tensorboard", "wandb"]
    assert load_config("tiny", ["log.report_to="]).log.backends() == ["jsonl"]
    with pytest.raises(ConfigError, match=r"log.report_to: unknown backend 'wandbb' \(did you mean 'wandb'\?\)"):
        load_config("tiny", ["log.report_to=tensorboard,wandbb"])
    with pytest.raises(ConfigError, match="unknown backend 'comet'.*jsonl, tensorboard, wandb, mlflow"):
        load_config("tiny", ["log.report_to=comet"])


def test_a_missing_library_stops_the_pipeline_before_any_training(tmp_path):
    """Each library is made unimportable in turn in a real CLI process (a None entry in sys.modules
    is how Python marks a module as absent: ``import`` raises ImportError)."""
    out = tmp_path / "out"
    code = f"""
import sys
from critique_rl.cli import main
for backend, module in [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboard")]:
    sys.modules[module] = None
    print("rc", main(["pipeline", "--config", "tiny", "--out", {str(out)!r}, "log.report_to=jsonl," + backend]))
    del sys.modules[module]
"""
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["rc", "2"] * 3, result.stderr[-2000:]
    for backend in ("wandb", "mlflow", "tensorboard"):
        assert (f"report_to includes '{backend}' but {backend} is not installed: pip install 'critique-rl[{backend}]'"
                in result.stderr)
    assert "Traceback" not in result.stderr
    assert not (out / "warmstart").exists() and not (out / ".warmstart-tmp").exists()


def test_a_missing_library_stops_train_before_the_first_step(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    code = ("import sys; sys.modules['wandb'] = None; from critique_rl.cli import main; "
            f"sys.exit(main(['train', '--config', 'tiny', '--out', {str(run)!r}, "
            f"'model.name_or_path={tiny_model_dir}', 'log.report_to=wandb']))")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "report_to includes 'wandb' but wandb is not installed: pip install 'critique-rl[wandb]'" in result.stderr
    assert not (run / "metrics.jsonl").exists() and not list(run.glob("checkpoint*"))


def test_non_finite_values_are_left_out_of_every_backend_as_jsonl_writes_null(tmp_path, wandb_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from critique_rl.metrics import MetricsLogger

    cfg = load_config("tiny", ["log.report_to=tensorboard,wandb,mlflow"])
    logger = MetricsLogger(tmp_path, cfg)
    logger.log({"step": 1, "loss": float("nan"), "grad_norm": float("inf"), "reward": 0.5})
    logger.log({"step": 2, "loss": 0.25, "grad_norm": 1.0, "reward": 0.75})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] is None and rows[0]["grad_norm"] is None
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {tag: [e.step for e in acc.Scalars(tag)] for tag in ("loss", "grad_norm", "reward")} == \
        {"loss": [2], "grad_norm": [2], "reward": [1, 2]}
    client = mlflow_client(tmp_path)
    series = mlflow_series(client, json.loads((tmp_path / "tracking.json").read_text())["mlflow"])
    assert series == {"loss": {2: 0.25}, "grad_norm": {2: 1.0}, "reward": {1: 0.5, 2: 0.75}}
    assert all(math.isfinite(v) for s in series.values() for v in s.values())


def test_a_copied_run_directory_forgets_the_originals_wandb_and_mlflow_runs(tmp_path):
    from critique_rl.tracking import forget_runs

    for name in ("wandb/offline-run-x", "mlflow/artifacts", "tensorboard"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "tracking.json").write_text('{"wandb": "abc", "mlflow": "def"}')
    forget_runs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tensorboard"]


def test_a_backend_that_cannot_start_its_run_says_which_and_why(tmp_path):
    from critique_rl.metrics import MetricsLogger
    from critique_rl.tracking import TrackingStartError

    logger = MetricsLogger(tmp_path, load_config("tiny", ["log.report_to=mlflow", "log.mlflow_tracking_uri=nosuchscheme://x"]))
    with pytest.raises(TrackingStartError, match=r"log.report_to: mlflow could not start its run \(.*nosuchscheme"):
        logger.log({"step": 0, "reward": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 0, "reward": 0.5}
