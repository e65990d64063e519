"""The openai critic backend against a local OpenAI-compatible stub: prompts, verdict check, cache, pacing."""

import asyncio
import json
import time
from pathlib import Path

import pytest

from critique_rl.cli import main as cli_main
from critique_rl.config import ConfigError, load_config
from critique_rl.critics import CritiqueRequest
from critique_rl.critics.ratelimit import RateLimiter
from critique_rl.critics.stub_server import StubServer
from critique_rl.templates import TemplateError

WRONG = CritiqueRequest("12+30+5", "12+30=43; 43+5=48; answer 48", "47", False)
RIGHT = CritiqueRequest("12+30+5", "12+30=42; 42+5=47; answer 47", "47", True)
EXAMPLES = Path(__file__).parents[1] / "examples"


def counts(metrics: dict) -> tuple:
    return tuple(int(metrics[f"critic/{k}"]) for k in ("requests", "retries", "failures", "fallbacks"))


def test_chat_and_completions_send_the_rendered_prompt(openai_critic):
    with StubServer() as server:
        [c] = openai_critic(server.base_url).critique([WRONG])
        assert c.text == "The attempt is wrong.\nVerdict: wrong" and c.verdict == "wrong"
        assert c.provenance == {"model": "stub", "cached": False, "retries": 0, "verdict_retries": 0, "fallback": None}
        openai_critic(server.base_url, "critic.api=completions").critique([WRONG])
        openai_critic(server.base_url, "critic.system_template=math/critic_system.jinja").critique([WRONG])
    chat, completion, with_system = server.received
    assert [m["role"] for m in chat["messages"]] == ["user"]
    assert "12+30=43; 43+5=48" in chat["messages"][0]["content"] and "correct final answer: 47" in chat["messages"][0]["content"]
    assert completion["prompt"] == chat["messages"][0]["content"] and "messages" not in completion
    assert [m["role"] for m in with_system["messages"]] == ["system", "user"]
    assert chat["model"] == "stub" and chat["max_tokens"] == 1024 and chat["temperature"] == 0.7


def test_indicative_and_ground_truth_are_rendered_without_a_call(openai_critic):
    with StubServer() as server:
        [gt] = openai_critic(server.base_url, "critic.critique_type=ground_truth").critique([WRONG])
        [ind] = openai_critic(server.base_url, "critic.critique_type=indicative").critique([RIGHT])
    assert server.received == []
    assert (gt.text, gt.verdict) == ("verdict: wrong. the answer is 47", "wrong")
    assert (ind.text, ind.verdict) == ("verdict: correct", "correct")


def test_disagreeing_verdict_is_regenerated_then_replaced_by_the_fallback(openai_critic):
    with StubServer(reply="All steps check out.\nVerdict: correct") as server:
        critic = openai_critic(server.base_url, "critic.max_verdict_retries=2")
        [c] = critic.critique([WRONG])
        metrics = critic.metrics()
    assert c.text == "verdict: wrong. the answer is 47" and c.provenance["fallback"] == "verdict_disagrees"
    assert counts(metrics) == (3, 0, 0, 1) and metrics["critic/verdict_retries"] == 2


def test_regeneration_stops_once_the_verdict_agrees(openai_critic):
    replies = iter(["Verdict: correct", "Step 1 should be 42.\nVerdict: wrong"])
    with StubServer(reply=lambda body: next(replies)) as server:
        critic = openai_critic(server.base_url)
        [c] = critic.critique([WRONG])
        metrics = critic.metrics()
    assert c.text == "Step 1 should be 42.\nVerdict: wrong" and c.provenance["verdict_retries"] == 1
    assert counts(metrics) == (2, 0, 0, 0) and metrics["critic/verdict_retries"] == 1


def test_output_without_verdict_falls_back_at_once(openai_critic):
    with StubServer(reply="looks fine to me") as server:
        critic = openai_critic(server.base_url, "critic.fallback=indicative")
        [c] = critic.critique([WRONG])
        metrics = critic.metrics()
    assert (c.text, c.provenance["fallback"]) == ("verdict: wrong", "no_verdict")
    assert counts(metrics) == (1, 0, 1, 1)
    assert critic.metrics()["critic/requests"] == 0          # per-step values: reset by metrics()


@pytest.mark.parametrize("reply, fallback", [
    # the rule critic's own format: the verdict ends the only line
    ("step 1 ok. step 2 wrong, should be 85+29=114. verdict: wrong", None),
    ("Step 1 is wrong.\n**Verdict:** Incorrect\n\nHope this helps.", None),
    # the prompt's instruction echoed in an earlier line is not a verdict
    ('End with one line: "Verdict: correct" or "Verdict: wrong".\nStep 1 is off by one.', "no_verdict"),
])
def test_the_verdict_is_read_from_the_last_line_wherever_it_stands(openai_critic, reply, fallback):
    with StubServer(reply=reply) as server:
        [c] = openai_critic(server.base_url).critique([WRONG])
    assert c.verdict == "wrong" and c.provenance["fallback"] == fallback
    assert c.text == (reply if fallback is None else "verdict: wrong. the answer is 47")


def test_cache_replays_critiques_and_misses_when_sampling_changes(openai_critic, tmp_path):
    requests = [WRONG, CritiqueRequest("1+2", "1+2=4; answer 4", "3", False), CritiqueRequest("5+5", "answer 11", "10", False)]
    with StubServer() as server:
        first = openai_critic(server.base_url, "critic.cache=true", run_dir=tmp_path)
        texts = [c.text for c in first.critique(requests)]
        assert first.metrics()["critic/requests"] == 3
        again = openai_critic(server.base_url, "critic.cache=true", run_dir=tmp_path)
        replayed = again.critique(requests)
        metrics = again.metrics()
        assert [c.text for c in replayed] == texts and all(c.provenance["cached"] for c in replayed)
        assert metrics["critic/cache_hits"] == 3 and metrics["critic/requests"] == 0
        hotter = openai_critic(server.base_url, "critic.cache=true", "critic.temperature=1.0", run_dir=tmp_path)
        hotter.critique(requests)
        assert hotter.metrics()["critic/requests"] == 3
        openai_critic(server.base_url, "critic.cache=off", run_dir=tmp_path / "off").critique(requests)
    assert (tmp_path / "critic_cache.sqlite").is_file() and not (tmp_path / "off").exists()


def test_concurrency_is_bounded_by_max_concurrency(openai_critic):
    with StubServer(latency_s=0.3) as server:
        start = time.perf_counter()
        openai_critic(server.base_url, "critic.max_concurrency=8").critique([WRONG] * 8)
        parallel = time.perf_counter() - start
        assert server.max_in_flight == 8
        server.max_in_flight = 0
        start = time.perf_counter()
        openai_critic(server.base_url, "critic.max_concurrency=2").critique([WRONG] * 6)
        bounded = time.perf_counter() - start
    assert server.max_in_flight == 2
    assert parallel < 0.9 and bounded >= 0.9            # 8 at once: one latency; 6 by twos: three


def test_requests_per_minute_budget_spreads_requests(openai_critic):
    with StubServer() as server:
        start = time.perf_counter()
        critic = openai_critic(server.base_url, "critic.requests_per_minute=600")   # 10/s, bursts of 10
        critic.critique([WRONG] * 15)
    assert time.perf_counter() - start >= 0.45 and len(server.received) == 15


def test_rate_limiter_bucket_waits_and_refunds():
    async def run():
        bucket = RateLimiter(per_minute=600)          # 10 units/s, holds 10
        start = time.monotonic()
        await bucket.acquire(10)
        assert time.monotonic() - start < 0.05
        await bucket.acquire(5)                       # empty bucket: 0.5 s for 5 units
        waited = time.monotonic() - start
        bucket.settle(-5)                             # 5 units were not used after all
        await bucket.acquire(5)
        return waited, time.monotonic() - start - waited
    waited, refunded = asyncio.run(run())
    assert 0.45 <= waited < 0.8 and refunded < 0.05


def test_missing_key_variable_is_named(openai_critic, monkeypatch):
    monkeypatch.delenv("CRITIC_TEST_KEY_UNSET", raising=False)
    with pytest.raises(ConfigError, match=r"\$CRITIC_TEST_KEY_UNSET is not set"):
        openai_critic("http://127.0.0.1:9/v1", "critic.api_key_env=CRITIC_TEST_KEY_UNSET")


def test_prompt_template_errors_fail_at_build_time(openai_critic, tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{{ question }} was judged {{ verdict }}\n")       # the critic is never told the verdict
    with pytest.raises(TemplateError, match=r"bad.jinja:1: template variable 'verdict' is not provided"):
        openai_critic("http://127.0.0.1:9/v1", f"critic.prompt_template={bad}")


def test_render_prints_the_exact_critic_input(capsys):
    assert cli_main(["render", "--critic-prompt", "critic.backend=openai"]) == 0
    messages = json.loads(capsys.readouterr().out)
    assert messages[0]["role"] == "user" and messages[0]["content"].rstrip().endswith('"Verdict: wrong".')
    assert cli_main(["render", "--critic-prompt", "critic.backend=self", "critic.self_reference=false",
                     "critic.api=completions"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Check this solution") and "correct final answer" not in text


@pytest.mark.parametrize("name, backend", [("critic_openai_gpt4o", "openai"), ("critic_vllm_serve", "openai"),
                                           ("critic_hf", "hf"), ("critic_self", "self")])
def test_example_configs_load(name, backend):
    cfg = load_config(str(EXAMPLES / f"{name}.yaml"))
    assert cfg.critic.backend == backend and cfg.critic.critique_type == "cot"
