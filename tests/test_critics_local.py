"""Local model critics in short CPU trainings: a transformers model of its own (hf) and the policy itself (self).

The tiny models are random, so their critiques carry no verdict and fall back; what is tested is
that prompts are rendered, generated from and counted, and that training runs through.
"""

import json

import pytest

from critique_rl.config import ConfigError, load_config
from critique_rl.critics import CritiqueRequest, build_critic


def critic_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "critic/requests" in r]


@pytest.mark.parametrize("overrides", [
    ("critic.backend=hf", "critic.api=chat", "critic.device=cpu"),
    ("critic.backend=self", "critic.api=completions", "critic.self_reference=false", "critic.fallback=indicative"),
])
def test_local_critic_trains(train_short, tiny_model_dir, overrides):
    run_dir = train_short(*overrides, f"critic.model={tiny_model_dir}", "critic.max_tokens=12")
    rows = critic_rows(run_dir)
    assert len(rows) == 2 and (run_dir / "final_eval.json").is_file()
    for r in rows:
        assert r["critic/requests"] >= r["refine/critiques"] > 0
        assert r["critic/completion_tokens"] > 0 and r["critic/latency_p50"] > 0
        # Random weights write no verdict line: every critique falls back. The start-up check of
        # Trainer.check_templates is not counted in step 1.
        assert r["critic/fallbacks"] == r["refine/critiques"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    critiques = {ref["critique"] for s in samples for ref in s.get("refinements", [])}
    expected = {"verdict: wrong"} if "critic.fallback=indicative" in overrides else None
    assert critiques and (expected is None or critiques == expected)
    assert (run_dir / "critic_cache.sqlite").is_file() == ("critic.backend=hf" in overrides)   # self never caches


def test_self_critic_without_reference_never_sees_it(tiny_model_dir):
    from critique_rl.modeling import load_policy

    cfg = load_config("tiny", ["critic.backend=self", "critic.api=completions", "critic.self_reference=false",
                               "critic.max_tokens=4"])
    model, tok = load_policy(str(tiny_model_dir), cfg.model)
    critic = build_critic(cfg.critic, cfg.task.name, policy=(model, tok))
    seen = []
    generate = critic.generator.engine.generate
    critic.generator.engine.generate = lambda prompts, n, params: seen.extend(prompts) or generate(prompts, n, params)
    critic.critique([CritiqueRequest("12+30+5", "12+30=43; 43+5=48; answer 48", "47", False)])
    assert seen and "47" not in seen[0] and "12+30=43" in seen[0]


def test_chat_api_needs_a_chat_template(tiny_model_dir):
    from critique_rl.modeling import build_char_tokenizer, build_tiny_model

    cfg = load_config("tiny", ["critic.backend=self", "critic.api=chat"])
    tok = build_char_tokenizer()
    with pytest.raises(ConfigError, match="no chat template; set critic.api: completions"):
        build_critic(cfg.critic, cfg.task.name, policy=(build_tiny_model(load_config("tiny").warmstart, tok, 0), tok))
