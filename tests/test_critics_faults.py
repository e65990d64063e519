"""Fault injection: a real HTTP server on 127.0.0.1 misbehaves on purpose; each fault gets its documented handling.

Transient faults (429 with Retry-After, 500, a hang past the request timeout, a dropped
connection) are retried and the critique succeeds; an empty body or another 4xx is not retried
and the fallback critique is used; 401 stops everything with an error naming the key's variable.
"""

import time
from collections import Counter

import pytest

from critique_rl.critics import CritiqueRequest
from critique_rl.critics.base import CriticAuthError
from critique_rl.critics.generative import FALLBACK_REASONS
from critique_rl.critics.stub_server import StubServer
from tests.conftest import free_port

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
        assert c.text == FALLBACK and c.provenance["fallback"] == {"empty": "bad_response", "400": "http_400"}[fault]
        assert c.provenance["error"].startswith(("JSONDecodeError", "HTTP 400: "))
    else:
        assert c.verdict == "wrong" and c.provenance["retries"] == 1 and c.provenance["fallback"] is None


def test_exhausted_retries_fall_back(openai_critic):
    with StubServer(faults=["500"] * 5) as server:
        critic = openai_critic(server.base_url, "critic.max_retries=2")
        [c] = critic.critique([WRONG])
        metrics = critic.metrics()
    assert server.served == ["500"] * 3
    assert counts(metrics) == (3, 2, 1, 1) and c.text == FALLBACK and c.provenance["fallback"] == "http_500"


def test_deadline_bounds_a_critique_of_hanging_requests(openai_critic):
    with StubServer(faults=["hang"] * 10) as server:
        critic = openai_critic(server.base_url, "critic.timeout_s=0.4", "critic.deadline_s=1.0")
        start = time.perf_counter()
        [c] = critic.critique([WRONG])
        elapsed = time.perf_counter() - start
        metrics = critic.metrics()
    assert 1.0 <= elapsed < 1.6
    assert c.text == FALLBACK and c.provenance["fallback"] == "deadline"
    assert c.provenance["error"].startswith("deadline of 1 s passed")
    assert metrics["critic/failures"] == 1 and metrics["critic/fallbacks"] == 1 and metrics["critic/requests"] >= 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(openai_critic):
    with StubServer(faults=["429"], retry_after="30") as server:
        critic = openai_critic(server.base_url, "critic.deadline_s=2")
        start = time.perf_counter()
        [c] = critic.critique([WRONG])
        assert time.perf_counter() - start < 1.0
        metrics = critic.metrics()
    assert counts(metrics) == (1, 0, 1, 1) and c.provenance["fallback"] == "http_429"


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


# ---------------------------------------------------------------- the circuit breaker
def reasons(critiques) -> dict[str, int]:
    return dict(Counter(c.provenance["fallback"] for c in critiques))


def test_refused_connections_cost_seconds_not_minutes(openai_critic):
    """Nothing listens on the port. Without the breaker each critique would retry 5 times with
    1+2+4+8+16 s of backoff (minutes for 64 critiques, 32 at a time); with it the first wave's
    failures open the circuit, their retries stop and the rest fail at once."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    critic = openai_critic(url, "critic.backoff_s=1", "critic.max_concurrency=32")
    start = time.perf_counter()
    critiques = critic.critique([WRONG] * 64)
    elapsed = time.perf_counter() - start
    metrics = critic.metrics()
    assert elapsed < 10, elapsed
    assert all(c.text == FALLBACK for c in critiques) and set(reasons(critiques)) <= {"connection", "circuit_open"}
    assert reasons(critiques)["circuit_open"] == metrics["critic/circuit_open"] >= 32
    assert metrics["critic/fallbacks"] == 64 and metrics["critic/requests"] < 64


def test_a_hanging_server_opens_the_circuit_after_the_first_timeouts(openai_critic):
    """Without the breaker: 10 waves of 4 critiques, each 6 requests of 0.5 s (30 s); with it, one wave."""
    with StubServer(faults=["hang"] * 100) as server:
        critic = openai_critic(server.base_url, "critic.timeout_s=0.5", "critic.max_concurrency=4",
                               "critic.circuit_failures=4")
        start = time.perf_counter()
        critiques = critic.critique([WRONG] * 40)
        elapsed = time.perf_counter() - start
    assert 0.5 <= elapsed < 5, elapsed
    # The first wave's 4 timeouts open the circuit; those already retrying end on it too.
    found = reasons(critiques)
    assert set(found) == {"timeout", "circuit_open"} and found["circuit_open"] >= 36
    assert 4 <= len(server.served) <= 8
    assert all(c.provenance["error"].startswith("APITimeoutError") for c in critiques
               if c.provenance["fallback"] == "timeout")


def test_after_the_cooldown_a_probe_reopens_or_closes_the_circuit(openai_critic):
    with StubServer(faults=["500"] * 100) as server:
        critic = openai_critic(server.base_url, "critic.max_retries=0", "critic.max_concurrency=1",
                               "critic.circuit_failures=3", "critic.circuit_cooldown_s=0.5")
        assert reasons(critic.critique([WRONG] * 12)) == {"http_500": 3, "circuit_open": 9}
        assert critic.metrics()["critic/circuit_open"] == 9
        assert reasons(critic.critique([WRONG] * 3)) == {"circuit_open": 3}            # cooling down
        time.sleep(0.6)
        assert reasons(critic.critique([WRONG] * 3)) == {"http_500": 1, "circuit_open": 2}   # the probe fails
        server.faults.clear()                                                          # the server recovers
        time.sleep(0.6)
        assert reasons(critic.critique([WRONG] * 3)) == {None: 3}                      # the probe closes it
    assert server.served == ["500"] * 4 + ["ok"] * 3


def test_fallback_reasons_are_from_the_fixed_vocabulary(openai_critic):
    with StubServer(faults=["400", "empty", "500"], reply=lambda body: "no verdict here") as server:
        critic = openai_critic(server.base_url, "critic.max_retries=0", "critic.max_concurrency=1")
        critiques = critic.critique([WRONG] * 4)
    assert [c.provenance["fallback"] for c in critiques] == ["http_400", "bad_response", "http_500", "no_verdict"]
    assert all(r in FALLBACK_REASONS or r.startswith("http_") for r in reasons(critiques))
