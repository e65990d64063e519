"""Generation batched by a token budget, and prompts longer than the model's context
(rollout.max_tokens_per_generate, rollout.long_prompt), on the real tiny model: 256 positions,
one token per character."""

import logging

import pytest

from critique_rl.batching import token_budget_microbatches
from critique_rl.config import load_config
from critique_rl.modeling import load_policy
from critique_rl.rollout import HFEngine, SamplingParams

NEW = 8                                  # max_new_tokens: a 256-position model leaves prompts 248 tokens
LIMIT = 256 - NEW
GREEDY = SamplingParams(NEW, greedy=True)
# Distinct prompts, two of them longer than the context (the long ones end differently, so a cut keeps that end).
PROMPTS = ["12+34=", "7" * 300 + "+1=", "9+9+9=", "5+" * 150 + "2=", "47+38="]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(str(tiny_model_dir), load_config("tiny").model)


class CountingGenerate:
    """Wraps model.generate to record the (rows, prompt width) of every call."""

    def __init__(self, model):
        self.inner, self.calls = model.generate, []
        model.generate = self

    def __call__(self, **kw):
        self.calls.append(tuple(kw["input_ids"].shape))
        return self.inner(**kw)


def test_budget_groups_by_padded_length_with_a_row_cap():
    # rows of prompts 10, 2, 6, 2 tokens + 4 new: 14, 6, 10, 6; budget 24: 2 x 6, then 10 (2 x 14 > 24), then 14
    assert token_budget_microbatches([14, 6, 10, 6], max_tokens=24) == [[1, 3], [2], [0]]
    assert token_budget_microbatches([5] * 5, max_tokens=1000, max_rows=2) == [[0, 1], [2, 3], [4]]
    assert token_budget_microbatches([300, 5], max_tokens=100) == [[1], [0]]      # too long alone: a call of its own


def test_long_prompts_are_cut_from_the_left_counted_and_reported_once(policy, caplog):
    model, tok = policy
    engine = HFEngine(model, tok)
    with caplog.at_level(logging.WARNING, logger="critique_rl.rollout.base"):
        out = engine.generate(PROMPTS, 2, GREEDY)
        assert engine.metrics() == {"rollout/prompts_truncated": 2.0}
        engine.generate(PROMPTS[1:2], 1, GREEDY)
    assert engine.metrics() == {"rollout/prompts_truncated": 1.0} and engine.metrics() == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 5 prompts" in warnings[0] and f"the {LIMIT} tokens" in warnings[0] and "the longest: 303" in warnings[0]
    assert [len(o) for o in out] == [2] * len(PROMPTS)
    for prompt, group in zip(PROMPTS, out):          # every prompt's completions, in order, from its own (cut) prompt
        for c in group:
            assert tok.decode(c.prompt_ids) == prompt[-LIMIT:]
            assert len(c.prompt_ids) + len(c.completion_ids) <= 256 and c.text == group[0].text


def test_generate_calls_respect_the_token_budget_and_keep_the_order(policy):
    model, tok = policy
    budget = 3 * (LIMIT + NEW)
    counting = CountingGenerate(model)
    try:
        out = HFEngine(model, tok, generation_batch_size=4, max_tokens_per_generate=budget).generate(PROMPTS, 3, GREEDY)
        calls, counting.calls = counting.calls, []
        # The same rows in one call give the same greedy completions, in the same places.
        whole = HFEngine(model, tok, max_tokens_per_generate=10 ** 6).generate(PROMPTS, 3, GREEDY)
    finally:
        del model.generate                            # the instance attribute: the class's generate again
    assert sum(r for r, _ in calls) == 3 * len(PROMPTS) and len(calls) > 1
    assert all(r <= 4 and r * (width + NEW) <= budget for r, width in calls)
    assert [[c.text for c in o] for o in whole] == [[c.text for c in o] for o in out]
    assert len(counting.calls) == 1


def test_skip_gives_long_prompts_empty_truncated_completions(policy):
    model, tok = policy
    engine = HFEngine(model, tok, long_prompt="skip")
    out = engine.generate(PROMPTS, 2, GREEDY)
    assert engine.metrics() == {"rollout/prompts_skipped": 2.0}
    for prompt, group in zip(PROMPTS, out):
        assert len(group) == 2
        if len(prompt) > LIMIT:
            assert all(c.text == "" and c.completion_ids == [] and c.truncated for c in group)
            assert all(len(c.prompt_ids) == LIMIT for c in group)
        else:
            assert all(tok.decode(c.prompt_ids) == prompt and c.completion_ids for c in group)


def test_no_room_for_a_prompt_is_a_clear_error(policy):
    model, tok = policy
    with pytest.raises(ValueError, match="max_new_tokens 300 leaves no room for a prompt in the model's context of 256"):
        HFEngine(model, tok).generate(["1+1="], 1, SamplingParams(300))


def test_training_with_skipped_prompts_keeps_their_groups_inert(train_short):
    import json

    # 250 new tokens leave prompts 6 characters: every prompt is skipped, the worst case of a step.
    run = train_short("rollout.long_prompt=skip", "rollout.max_completion_length=250", "train.steps=1")
    [row] = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["step"] == 1]
    assert row["rollout/prompts_skipped"] >= 4 and row["reward"] == 0.0
    assert all(v == v for v in row.values() if isinstance(v, float))          # no NaN from token-less rows
