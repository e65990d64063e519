"""Fault injection: a real HTTP server on 127.0.0.1 misbehaves on purpose; each fault gets its documented handling.

Transient faults (429 with Retry-After, 500, a hang past the request timeout, a dropped
connection) are retried and the critique succeeds; an empty body or another 4xx is not retried
and the fallback critique is used; 401 stops everything with an error naming the key's variable.
"""

import time

import pytest

from critique_rl.critics import CritiqueRequest
from critique_rl.critics.base import CriticAuthError
from critique_rl.critics.stub_server import StubServer

WRONG = CritiqueRequest("12+30+5", "12+30=43; 43+5=48; answer 48", "47", False)
FALLBACK = "verdict: wrong. the answer is 47"


def counts(metrics: dict) -> tuple:
    return tuple(int(metrics[f"critic/{k}"]) for k in ("requests", "retries", "failures", "fallbacks"))


@pytest.mark.parametrize("fault, expected, min_seconds", [
    # fault:   (requests, retries, failures, fallbacks)
    ("429", (2, 1, 0, 0), 1.0),          # waits the Retry-After: 1 s, not the 0.01 s backoff
    ("500", (2, 1, 0, 0), 0.0),
    ("hang", (2, 1, 0, 0), 0.5),         # the 0.5 s request timeout, then a retry
    ("drop", (2, 1, 0, 0), 0.0),
    ("empty", (1, 0, 1, 1), 0.0),        # a 200 without a completion: not retried, fallback
    ("400", (1, 0, 1, 1), 0.0),          # other 4xx: not retried, fallback
])
def test_single_fault(openai_critic, fault, expected, min_seconds):
    with StubServer(faults=[fault]) as server:
        critic = openai_critic(server.base_url, "critic.timeout_s=0.5")
        start = time.perf_counter()
        [c] = critic.critique([WRONG])
        elapsed = time.perf_counter() - start
        metrics = critic.metrics()
    assert server.served == [fault, "ok"][:expected[0]]
    assert counts(metrics) == expected
    assert elapsed >= min_seconds
    if expected[3]:
        assert c.text == FALLBACK and c.provenance["fallback"].startswith(("JSONDecodeError", "HTTP 400"))
    else:
        assert c.verdict == "wrong" and c.provenance["retries"] == 1 and c.provenance["fallback"] is None


def test_exhausted_retries_fall_back(openai_critic):
    with StubServer(faults=["500"] * 5) as server:
        critic = openai_critic(server.base_url, "critic.max_retries=2")
        [c] = critic.critique([WRONG])
        metrics = critic.metrics()
    assert server.served == ["500"] * 3
    assert counts(metrics) == (3, 2, 1, 1) and c.text == FALLBACK and c.provenance["fallback"].startswith("HTTP 500")


def test_deadline_bounds_a_critique_of_hanging_requests(openai_critic):
    with StubServer(faults=["hang"] * 10) as server:
        critic = openai_critic(server.base_url, "critic.timeout_s=0.4", "critic.deadline_s=1.0")
        start = time.perf_counter()
        [c] = critic.critique([WRONG])
        elapsed = time.perf_counter() - start
        metrics = critic.metrics()
    assert 1.0 <= elapsed < 1.6
    assert c.text == FALLBACK and c.provenance["fallback"].startswith("deadline of 1 s passed")
    assert metrics["critic/failures"] == 1 and metrics["critic/fallbacks"] == 1 and metrics["critic/requests"] >= 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(openai_critic):
    with StubServer(faults=["429"], retry_after="30") as server:
        critic = openai_critic(server.base_url, "critic.deadline_s=2")
        start = time.perf_counter()
        [c] = critic.critique([WRONG])
        assert time.perf_counter() - start < 1.0
        metrics = critic.metrics()
    assert counts(metrics) == (1, 0, 1, 1) and c.provenance["fallback"].startswith("HTTP 429")


def test_faults_in_a_concurrent_batch_are_counted_exactly(openai_critic):
    faults = ["429", "500", "drop", "empty", "hang", "400"]
    with StubServer(faults=faults, retry_after="0") as server:
        critic = openai_critic(server.base_url, "critic.timeout_s=0.5", "critic.max_concurrency=16")
        critiques = critic.critique([WRONG] * 12)
        metrics = critic.metrics()
    # 12 first requests + one retry each for 429, 500, drop, hang; empty and 400 fall back.
    assert counts(metrics) == (16, 4, 2, 2)
    assert sorted(server.served) == sorted(faults + ["ok"] * 10)
    assert sum(c.text == FALLBACK for c in critiques) == 2


def test_401_stops_with_the_variable_named_and_the_key_hidden(openai_critic, monkeypatch):
    key = "sk-test-0123456789abcdef-SECRET"
    monkeypatch.setenv("CRITIC_FAULT_KEY", key)
    with StubServer(faults=["401"], latency_s=0.05) as server:
        critic = openai_critic(server.base_url, "critic.api_key_env=CRITIC_FAULT_KEY")
        with pytest.raises(CriticAuthError) as info:
            critic.critique([WRONG] * 4)
    message = str(info.value)
    assert "$CRITIC_FAULT_KEY" in message and "(401)" in message and key not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__      # no chained body text
    assert server.authorizations[0] == f"Bearer {key}"                           # the key was sent, only there


def test_401_without_a_configured_key_says_to_configure_one(openai_critic):
    with StubServer(faults=["401"]) as server:
        with pytest.raises(CriticAuthError, match=r"requires a key \(401\); set critic.api_key_env"):
            openai_critic(server.base_url).critique([WRONG])
