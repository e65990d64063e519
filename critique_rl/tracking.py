"""Experiment-tracking backends behind one interface: TensorBoard, Weights & Biases, MLflow.

``metrics.jsonl`` stays the record of a run (``metrics.MetricsLogger`` writes it); the backends
named in ``log.report_to`` receive the same rows under the same names (``eval/hard_pass1``,
``entropy/token_mean`` ...) with ``step`` as the x axis, and the resolved config as
hyperparameters. A value jsonl writes as null (NaN, inf) is left out of every backend.

Each backend is one small class with ``log(metrics, step)`` and ``close(error)``; each imports
its own library, so only the requested ones must be installed, and ``require`` says which extra
is missing before anything trains.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import shutil
import time
from pathlib import Path

from critique_rl.config import ConfigError, flatten
from critique_rl.interrupts import TrainingInterrupted

# backend -> modules it imports, its own library first.
MODULES = {"tensorboard": ["tensorboard", "torch.utils.tensorboard"], "wandb": ["wandb"], "mlflow": ["mlflow"]}
# Stores that mlflow reaches through SQLAlchemy (the default one is SQLite): mlflow-skinny lacks it.
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
IDS_FILE = "tracking.json"   # in the run directory: the wandb / mlflow run a resumed run continues


class TrackingUnavailable(ImportError):
    """A backend of ``log.report_to`` needs a library that is not installed."""


class TrackingStartError(ConfigError):
    """A backend could not start its run (credentials, tracking URI, project ...)."""


def require(log_cfg) -> None:
    """Import what the requested backends need; raise ``TrackingUnavailable`` naming the extra."""
    for name in log_cfg.backends():
        modules = list(MODULES.get(name, []))
        if name == "mlflow" and (not log_cfg.mlflow_tracking_uri or log_cfg.mlflow_tracking_uri.split(":")[0].split("+")[0] in SQL_SCHEMES):
            modules += ["sqlalchemy", "alembic"]
        for module in modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError:
                raise TrackingUnavailable(f"report_to includes {name!r} but {module} is not installed: "
                                          f"pip install 'critique-rl[{name}]'") from None
            except ImportError as err:
                raise TrackingUnavailable(f"report_to includes {name!r} but {module} does not import ({err}); "
                                          f"reinstall it: pip install 'critique-rl[{name}]'") from None


def numeric(metrics: dict) -> dict[str, float]:
    """The finite numbers of a row, without ``step``: what every backend plots."""
    return {k: float(v) for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}


def exit_status(error: BaseException | None) -> tuple[str, int]:
    """('finished' | 'killed' | 'failed', exit code) of a training that ended with ``error``."""
    if error is None:
        return "finished", 0
    if isinstance(error, TrainingInterrupted):
        return "killed", error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return "killed", 130
    return "failed", 1


class RunIds:
    """Backend run ids kept in the run directory, so a resumed run continues the same remote run."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / IDS_FILE

    def get(self, backend: str) -> str | None:
        return json.loads(self.path.read_text()).get(backend) if self.path.is_file() else None

    def set(self, backend: str, run_id: str) -> None:
        ids = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.path.write_text(json.dumps({**ids, backend: run_id}, indent=2))


def forget_runs(run_dir: Path) -> None:
    """Make a copy of a run directory (a continuation) start W&B and MLflow runs of its own instead
    of appending to the original's: drop the run ids and the local W&B and MLflow files. The
    TensorBoard event files stay, like metrics.jsonl: they are the history the copy continues."""
    (run_dir / IDS_FILE).unlink(missing_ok=True)
    for name in ("wandb", "mlflow"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


class TensorBoardTracker:
    """Event files under ``<run dir>/tensorboard``: scalars, the config as hparams and as text."""

    def __init__(self, run_dir: Path, log_cfg, config: dict, run_name: str, resume_step: int | None):
        import yaml
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # A resumed run redoes the steps after its checkpoint: hide their first try in TensorBoard.
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge, flush_secs=30)
        if resume_step is None:
            flat = {k: v if isinstance(v, (int, float, str)) else str(v) for k, v in flatten(config).items()}
            for summary in hparams(flat, {}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log(self, metrics: dict, step: int) -> None:
        for key, value in numeric(metrics).items():
            self.writer.add_scalar(key, value, step)

    def close(self, error: BaseException | None) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker:
    """A W&B run: offline by default (``<run dir>/wandb/offline-run-*``, upload with ``wandb sync``)."""

    def __init__(self, run_dir: Path, log_cfg, config: dict, run_name: str, resume_step: int | None):
        import wandb

        ids = RunIds(run_dir)
        self.run = wandb.init(
            project=log_cfg.project, entity=log_cfg.wandb_entity or None, name=run_name, id=ids.get("wandb"),
            resume="allow", dir=str(run_dir), config=config, mode=log_cfg.wandb_mode, reinit="create_new",
            settings=wandb.Settings(console="off", silent=True))
        ids.set("wandb", self.run.id)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, metrics: dict, step: int) -> None:
        self.run.log({**numeric(metrics), "step": step})

    def close(self, error: BaseException | None) -> None:
        self.run.finish(exit_code=exit_status(error)[1])


def mlflow_name(key: str) -> str:
    """MLflow allows only letters, digits and ``_ - . / : space`` in names: eval/hard_pass@4 -> eval/hard_pass_at_4."""
    return re.sub(r"[^/\w.\- :]", "_", key.replace("@", "_at_"))


class MlflowTracker:
    """An MLflow run in experiment ``log.project``; by default a SQLite store under ``<run dir>/mlflow``."""

    def __init__(self, run_dir: Path, log_cfg, config: dict, run_name: str, resume_step: int | None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri, artifacts = log_cfg.mlflow_tracking_uri, None
        if not uri:
            store = (run_dir / "mlflow").resolve()
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        ids = RunIds(run_dir)
        self.run_id = ids.get("mlflow")
        known: dict[str, str] = {}
        if self.run_id:
            self.client.update_run(self.run_id, status="RUNNING")
            known = self.client.get_run(self.run_id).data.params
        else:
            experiment = self.client.get_experiment_by_name(log_cfg.project)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(log_cfg.project, artifact_location=artifacts))
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            ids.set("mlflow", self.run_id)
        # Params cannot change once logged: a resumed run adds only keys the run does not have yet.
        params = [Param(k, str(v)) for k, v in flatten(config).items() if k not in known]
        for i in range(0, len(params), 100):   # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_name(k), v, now, step) for k, v in numeric(metrics).items()]
        for i in range(0, len(batch), 1000):   # at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def close(self, error: BaseException | None) -> None:
        self.client.set_terminated(self.run_id, status=exit_status(error)[0].upper())   # FINISHED, KILLED, FAILED


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(run_dir: Path, cfg, resume_step: int | None) -> list:
    """Start one tracker per requested backend (jsonl aside: ``MetricsLogger`` writes it itself)."""
    run_name = cfg.log.run_name or run_dir.resolve().name
    config = cfg.to_dict()
    trackers = []
    try:
        for name in cfg.log.backends():
            if name in TRACKERS:
                try:
                    trackers.append(TRACKERS[name](run_dir, cfg.log, config, run_name, resume_step))
                except Exception as err:
                    raise TrackingStartError(f"log.report_to: {name} could not start its run "
                                             f"({type(err).__name__}: {err}); check the log.* settings") from err
    except BaseException as err:
        for tracker in trackers:
            tracker.close(err)
        raise
    return trackers
