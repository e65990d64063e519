"""Shared fixtures: the real public data beside the repository (../shared/data, a local stand-in for
the hub: its files have the hub datasets' fields, at the places pulled copies have), never copied in;
a tiny random policy saved like a hub model, and short training runs from it; a tiny warm-started
policy and the real command line in subprocesses, for the reliability tests."""

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import pytest

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, laid out as a data directory of pulled benchmarks (data/benchmarks.yaml);
    tests that need it skip when the repository has no ../shared beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data stands in for the dataset hub in this test (real benchmark files, the same "
                    f"loading code) and is absent: no {SHARED_DATA}")
    return SHARED_DATA


# The char tokenizer has no chat template; chat APIs need one. ChatML, because `transformers
# serve` finds a qwen2 model's reply after "<|im_start|>assistant\n" (else it returns the prompt too).
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Random tiny Qwen2 + char tokenizer (with a ChatML chat template), saved with save_pretrained."""
    from critique_rl.config import load_config
    from critique_rl.modeling import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("tiny-model")
    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    build_tiny_model(load_config("tiny").warmstart, tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def train_short(tiny_model_dir: Path, tmp_path: Path):
    """Run a 2-step Critique-GRPO training from the tiny model with extra overrides; returns the run dir."""
    from critique_rl.config import load_config
    from critique_rl.pipeline import run_training

    def run(*overrides: str) -> Path:
        run_dir = tmp_path / "run"
        cfg = load_config("tiny", [f"model.name_or_path={tiny_model_dir}", "method=critique_grpo", "train.steps=2",
                                   "train.prompts_per_step=4", "rollout.num_generations=3", "eval.every=0",
                                   "task.eval_easy=8", "task.eval_hard=8", "eval.pass_n=2", "eval.pass_k=1",
                                   "rollout.max_completion_length=24", *overrides])
        run_training(cfg, run_dir, show_progress=False)
        return run_dir
    return run


@pytest.fixture
def openai_critic():
    """Build openai critics against a base URL, with critic overrides; fast backoff, no cache, no key by default."""
    from critique_rl.config import load_config
    from critique_rl.critics import build_critic

    made = []

    def build(base_url: str, *overrides: str, run_dir: Path | None = None):
        cfg = load_config("toy", ["critic.backend=openai", "critic.model=stub", f"critic.base_url={base_url}",
                                  "critic.api_key_env=", "critic.backoff_s=0.01", "critic.cache=false", *overrides])
        made.append(build_critic(cfg.critic, cfg.task.name, run_dir=run_dir))
        return made[-1]

    yield build
    for critic in made:
        critic.close()


@pytest.fixture(scope="session")
def warm_policy(tmp_path_factory) -> Path:
    """The tiny preset's 20-step warm start, what its runs train (rewards are still 0: tests that need updates add an entropy bonus)."""
    from critique_rl.config import load_config
    from critique_rl.pipeline import ensure_warm_start

    return ensure_warm_start(load_config("tiny"), tmp_path_factory.mktemp("warm"), show_progress=False)


@dataclass
class Cli:
    """``critique-rl`` as a real process (exit codes, signals, stderr), run from ``cwd``."""

    warm: Path
    cwd: Path
    argv = [sys.executable, "-m", "critique_rl.cli"]

    def __call__(self, *args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.argv, *args], cwd=self.cwd, capture_output=True, text=True, timeout=300)
        if check_rc is not None:
            assert result.returncode == check_rc, result.stderr[-3000:]
        return result

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*self.argv, *args], cwd=self.cwd, text=True, **kwargs)

    def train_args(self, run: Path, *overrides: str) -> list[str]:
        """A tiny-preset training of the warm policy into ``run``: no evaluation between steps, checkpoints every 2."""
        return ["train", "--config", "tiny", "--out", str(run), f"model.name_or_path={self.warm}", "eval.every=0",
                "train.save_every=2", *overrides]

    def train(self, run: Path, *overrides: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
        return self(*self.train_args(run, *overrides), check_rc=check_rc)

    @staticmethod
    def rows(run: Path) -> list[dict]:
        """The run's metrics.jsonl, one dict per logged step."""
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def cli(warm_policy: Path, tmp_path: Path) -> Cli:
    return Cli(warm_policy, tmp_path)


SERVE = Path(sys.executable).with_name("transformers")
needs_serve = pytest.mark.skipif(
    not SERVE.is_file() or any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn")),
    reason="`transformers serve` needs transformers[serving] (fastapi, uvicorn)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_hub(monkeypatch) -> Iterator[int]:
    """A dataset hub that refuses connections (HF_ENDPOINT at a closed local port), probed afresh; the port."""
    from critique_rl import datasets_io

    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    datasets_io._unreachable.cache_clear()
    yield port
    datasets_io._unreachable.cache_clear()


@contextmanager
def transformers_serve(*model: str, log: IO[str]) -> Iterator[str]:
    """A real `transformers serve` on 127.0.0.1, its output to ``log``; yields the base URL.

    With a model directory it serves only that model; without, it loads whatever directory a
    request names.
    """
    port = free_port()
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    proc = subprocess.Popen([*nice, str(SERVE), "serve", *model, "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300     # nice 19 on a busy 2-core machine starts slowly
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    log.flush()
                    pytest.fail(f"transformers serve did not come up: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
