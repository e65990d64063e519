"""The openai backend against a real OpenAI-compatible server: `transformers serve` with the tiny model.

The weights are random, so critiques are gibberish without a verdict line and fall back; the
test covers the plumbing: chat and completions requests, usage, counters, and a training run.
"""

import json

import pytest

from critique_rl.critics import CritiqueRequest
from tests.conftest import needs_serve, transformers_serve

pytestmark = needs_serve


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory) -> str:
    """Base URL of `transformers serve` preloaded with the tiny model, on 127.0.0.1."""
    logfile = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(logfile, "w") as log, transformers_serve(str(tiny_model_dir), log=log) as url:
        yield url


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_critiques_through_transformers_serve(served, openai_critic, tiny_model_dir, api):
    critic = openai_critic(served, f"critic.model={tiny_model_dir}", f"critic.api={api}", "critic.max_tokens=8",
                           "critic.timeout_s=30", "critic.max_concurrency=4")
    requests = [CritiqueRequest(f"{a}+{a}", f"{a}+{a}={a}; answer {a}", str(2 * a), False) for a in (11, 22, 33)]
    critiques = critic.critique(requests)
    metrics = critic.metrics()
    assert [c.text for c in critiques] == [f"verdict: wrong. the answer is {2 * a}" for a in (11, 22, 33)]
    assert all(c.provenance["fallback"] in ("no_verdict", "empty") for c in critiques)
    assert (metrics["critic/requests"], metrics["critic/retries"], metrics["critic/failures"]) == (3, 0, 3)
    assert metrics["critic/prompt_tokens"] > 100 and 0 < metrics["critic/completion_tokens"] <= 3 * 8


def test_training_with_transformers_serve_as_critic(served, train_short, tiny_model_dir):
    run_dir = train_short("critic.backend=openai", f"critic.base_url={served}", f"critic.model={tiny_model_dir}",
                          "critic.api_key_env=", "critic.api=completions", "critic.max_tokens=8", "critic.timeout_s=120")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "critic/requests" in r]
    assert len(trained) == 2 and (run_dir / "final_eval.json").is_file()
    assert all(r["critic/requests"] >= r["refine/critiques"] > 0 and r["critic/retries"] == 0 for r in trained)
    assert (run_dir / "critic_cache.sqlite").is_file()
