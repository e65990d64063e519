"""The tiny critic model (critique-rl warmstart-critic) and self-critique (warmstart.critique_fraction).

A few-step critic model of tiny sizes is saved and loaded through every backend that can serve
it: hf with the chat template and with raw completions, and openai against a real `transformers
serve` (skipped, like tests/test_critics_serve.py, without transformers[serving]). Its critiques
are gibberish after a few steps, so those tests check the plumbing; the metric functions are
checked on hand-written critiques. The test that Critique-GRPO rescues groups with the critic
model's critiques needs a critic that really critiques: it trains one for minutes, so it runs
only with CRITIQUE_RL_SLOW_TESTS=1 (see its docstring for the timing).
"""

from __future__ import annotations

import json
import os
import random

import pytest

from critique_rl.config import load_config
from critique_rl.critic_quality import first_wrong_step, held_out_requests, score_critiques
from critique_rl.critics import CritiqueRequest, build_critic
from critique_rl.tasks.arithmetic import ProblemSource, problem_from_operands
from critique_rl.warmstart import CritiqueTranscripts, TranscriptMaker, critic_model_critic, warm_start_critic
from tests.conftest import needs_serve, transformers_serve

CRITIC_PROMPT_START = "Check this solution of an addition problem"


@pytest.fixture(scope="module")
def critic_model_dir(tmp_path_factory):
    """A critic model of the tiny preset's sizes after 2 steps, saved as warmstart-critic saves it."""
    cfg = load_config("tiny", ["critic_model.steps=2"])
    path = tmp_path_factory.mktemp("critic") / "critic_model"
    info = warm_start_critic(cfg, path, show_progress=False)
    assert info["steps"] == 2 and len(info["losses"]) == 2
    return path


def request(operands, attempt, correct=False):
    p = problem_from_operands(operands)
    return CritiqueRequest(p.question, attempt, str(p.answer), correct, p)


# ---------------------------------------------------------------------------- the data
def test_warm_start_mix_has_critique_transcripts_at_the_configured_share():
    cfg = load_config("toy", ["warmstart.critique_fraction=0.3"])
    maker = TranscriptMaker(cfg, ProblemSource(cfg.task, 0))
    rng = random.Random(0)
    pairs = [maker.pair(rng) for _ in range(3000)]
    critiques = [(p, c) for p, c in pairs if p.startswith(CRITIC_PROMPT_START)]
    assert abs(len(critiques) / len(pairs) - 0.3) < 0.03
    # Each is the critic prompt as the config's critic sees it, and the rule critic's CoT critique.
    assert all(c.startswith("step 1 ") and c.endswith(("verdict: wrong", "verdict: correct")) for _, c in critiques)
    assert all("correct final answer: " in p and p.endswith('"Verdict: wrong".\n') for p, _ in critiques)
    verdicts = [c.rsplit(" ", 1)[1] for _, c in critiques]
    assert 0.1 < verdicts.count("correct") / len(verdicts) < 0.4    # correct solutions and some reorderings

    default = TranscriptMaker(load_config("toy"), ProblemSource(cfg.task, 0))
    assert default.critiques is None      # critique_fraction 0: no critique transcripts, no extra draws
    rng = random.Random(0)
    assert not any(default.pair(rng)[0].startswith(CRITIC_PROMPT_START) for _ in range(500))


def test_self_critic_transcripts_follow_self_reference():
    cfg = load_config("self-critic", ["critic.self_reference=false"])
    maker = TranscriptMaker(cfg, ProblemSource(cfg.task, 0))
    assert cfg.warmstart.max_position_embeddings == 512 and maker.critiques is not None
    prompt, critique = maker.critiques.pair(random.Random(1))
    assert "correct final answer" not in prompt and critique.startswith("step 1 ")


def test_critic_model_transcripts_are_raw_and_chat_and_vary():
    from critique_rl.warmstart import critic_tokenizer

    cfg = load_config("toy")
    tok = critic_tokenizer()
    maker = CritiqueTranscripts(cfg, ProblemSource(cfg.task, 0), critic_model_critic(cfg), tok, chat_fraction=0.5)
    rng = random.Random(3)
    pairs = [maker.pair(rng) for _ in range(400)]
    chat = [p for p, _ in pairs if p.startswith("<|im_start|>user\n")]
    assert 0.35 < len(chat) / len(pairs) < 0.65
    assert all(p.endswith("<|im_end|>\n<|im_start|>assistant\n") for p in chat)
    # The longest transcript fits the critic model's 512 positions with room to spare.
    assert max(len(tok(p + c).input_ids) for p, c in pairs) < 500
    firsts = {first_wrong_step(c)[0] for _, c in pairs}
    assert {None, 1, 2, 3} <= firsts      # correct attempts, and first errors at every step (truncations: the answer)


# ---------------------------------------------------------------------------- the metrics
def test_first_wrong_step_reads_the_rule_critics_wording_and_a_lenient_one():
    assert first_wrong_step("step 1 ok. step 2 wrong, should be 85+29=114. verdict: wrong") == (2, "85+29=114")
    assert first_wrong_step("Step 3 is wrong, it should be answer 114.\nVerdict: wrong") == (3, "answer 114")
    assert first_wrong_step("step 1 wrong. verdict: wrong") == (1, None)
    assert first_wrong_step("step 1 ok. step 2 ok. step 3 ok. verdict: correct") == (None, None)
    assert first_wrong_step("") == (None, None)


def test_score_critiques_against_the_rule_critic():
    wrong = request((47, 38, 29), "47+38=85; 85+29=104; answer 104")      # rule: step 2 wrong, should be 85+29=114
    right = request((47, 38, 29), "47+38=85; 85+29=114; answer 114", correct=True)
    texts = ["step 1 ok. step 2 wrong, should be 85+29=114. verdict: wrong",   # exact
             "step 1 ok. step 2 wrong, should be 85+29=113. verdict: wrong",   # right step, wrong value
             "step 1 wrong, should be 47+38=85. verdict: wrong",               # wrong step, right verdict
             "step 1 ok. step 2 ok. verdict: correct",                         # wrong verdict
             None,                                                             # no output
             "step 1 ok. step 2 ok. step 3 ok. verdict: correct",              # right (exact)
             "step 1 ok. step 2 ok. step 3 ok."]                               # no verdict
    scores = score_critiques([wrong] * 5 + [right] * 2, texts)
    assert scores == {"critiques": 7, "verdict_accuracy": 4 / 7, "no_verdict": 2 / 7,
                      "first_wrong_step_accuracy": 2 / 5, "correction_accuracy": 1 / 5, "exact_match": 2 / 7}


def test_held_out_attempts_are_fixed_wrong_and_correct_pairs_of_eval_problems():
    cfg = load_config("toy")
    first, again = held_out_requests(cfg, 3), held_out_requests(cfg, 3)
    assert [r.attempt for _, r in first] == [r.attempt for _, r in again]
    assert [s for s, _ in first] == ["easy"] * 6 + ["hard"] * 6
    assert [r.correct for _, r in first] == [False, True] * 6
    source = ProblemSource(cfg.task, 0)
    assert {r.question for _, r in first} <= {p.question for p in source.eval_easy + source.eval_hard}


# ---------------------------------------------------------------------------- save and load through the backends
def test_critic_model_is_saved_with_its_chat_template(critic_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(critic_model_dir)
    messages = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert json.loads((critic_model_dir / "config.json").read_text())["max_position_embeddings"] == 512


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_critic_model_through_the_hf_backend(critic_model_dir, api):
    cfg = load_config("tiny", ["critic.backend=hf", f"critic.model={critic_model_dir}", f"critic.api={api}",
                               "critic.device=cpu", "critic.max_tokens=16", "critic.cache=false"])
    critic = build_critic(cfg.critic, cfg.task.name)
    seen = []
    generate = critic.generator.engine.generate
    critic.generator.engine.generate = lambda prompts, n, params: seen.extend(prompts) or generate(prompts, n, params)
    critiques = critic.critique([request((47, 38, 29), "47+38=85; 85+29=104; answer 104")])
    metrics = critic.metrics()
    assert len(critiques) == 1 and metrics["critic/requests"] >= 1 and metrics["critic/completion_tokens"] > 0
    assert seen[0].startswith("<|im_start|>user\nCheck this" if api == "chat" else CRITIC_PROMPT_START)
    assert metrics["critic/prompt_tokens"] == len(critic.generator.tokenizer(seen[0]).input_ids) * metrics["critic/requests"]


@pytest.fixture(scope="module")
def served_critic_model(critic_model_dir, tmp_path_factory) -> str:
    """Base URL of `transformers serve` preloaded with the few-step critic model."""
    with open(tmp_path_factory.mktemp("serve") / "serve.log", "w") as log, \
            transformers_serve(str(critic_model_dir), log=log) as url:
        yield url


@needs_serve
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_critic_model_through_transformers_serve(critic_model_dir, served_critic_model, openai_critic, api):
    critic = openai_critic(served_critic_model, f"critic.model={critic_model_dir}", f"critic.api={api}",
                           "critic.max_tokens=16", "critic.timeout_s=30", "critic.max_verdict_retries=0")
    requests = [request((a, a, a), f"{a}+{a}={a}; answer {a}") for a in (11, 22)]
    critiques = critic.critique(requests)
    metrics = critic.metrics()
    raw = critic.generator.generate([critic.prompt.render(r) for r in requests])
    assert metrics["critic/requests"] == 2 and metrics["critic/retries"] == 0
    assert metrics["critic/prompt_tokens"] > 2 * 300 and 0 < metrics["critic/completion_tokens"] <= 2 * 16
    assert all(c.provenance.get("error") is None for c in critiques)
    # The reply alone: no echo of the prompt or the chat markers, no "<eos>" (CRITIC_RESPONSE_TEMPLATE).
    assert all(g.text is not None and "<|im_" not in g.text and "<eos>" not in g.text and "Check this" not in g.text
               for g in raw)


# ---------------------------------------------------------------------------- the pipeline's own critic model
def test_pipeline_critic_model_trains_it_into_out_and_critiques_with_it(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "critique_rl.cli", "pipeline", "--config", "tiny", "--critic", "model",
                             "--out", str(out), "pipeline.equal_compute=false", "train.steps=2"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    headers = [line for line in result.stdout.splitlines() if line.startswith("== [")]
    assert headers == ["== [1/5] warm start (20 steps) ==", "== [2/5] critic model (20 steps) ==",
                       "== [3/5] GRPO (2 steps) ==", "== [4/5] Critique-GRPO (2 steps) ==", "== [5/5] report =="]
    training = json.loads((out / "critic_model" / "training.json").read_text())
    assert training["steps"] == 20 and training["quality"]["critiques"] == 16      # 4 easy + 4 hard, wrong and right
    assert 0 <= training["quality"]["verdict_accuracy"] <= 1
    import yaml

    run_cfg = yaml.safe_load((out / "critique_grpo" / "config.yaml").read_text())
    assert run_cfg["critic"]["backend"] == "hf" and run_cfg["critic"]["model"] == str(out / "critic_model")
    rows = [json.loads(line) for line in (out / "critique_grpo" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("critic/requests", 0) for r in rows) > 0
    assert json.loads((out / "summary.json").read_text())["config"] == \
        "tiny --critic model + pipeline.equal_compute=false train.steps=2"


def test_compare_critic_model_method_trains_one_critic_model_per_seed_or_uses_the_given_one(tmp_path, critic_model_dir):
    """`compare --methods critic_model_hf`: Critique-GRPO with the critic model behind the hf backend,
    trained once into the seed's folder, or the one critic.model names."""
    import yaml

    from critique_rl.compare import run_compare

    cfg = load_config("tiny", ["train.steps=1", "critic_model.eval_problems=0", "eval.every=0", "eval.probe_prompts=0"])
    own = run_compare(cfg, tmp_path / "own", ["critic_model_hf"], show_progress=False)
    run_cfg = yaml.safe_load((tmp_path / "own" / "critic_model_hf" / "config.yaml").read_text())
    assert (run_cfg["method"], run_cfg["critic"]["backend"], run_cfg["critic"]["api"]) == ("critique_grpo", "hf", "completions")
    assert run_cfg["critic"]["model"] == str(tmp_path / "own" / "critic_model")
    assert (tmp_path / "own" / "critic_model" / "model.safetensors").is_file() and "critic_model_hf" in own["methods"]

    given = load_config("tiny", ["train.steps=1", "eval.every=0", "eval.probe_prompts=0", f"critic.model={critic_model_dir}"])
    run_compare(given, tmp_path / "given", ["critic_model_hf"], show_progress=False)
    assert not (tmp_path / "given" / "critic_model").exists()
    run_cfg = yaml.safe_load((tmp_path / "given" / "critic_model_hf" / "config.yaml").read_text())
    assert run_cfg["critic"]["model"] == str(critic_model_dir)
    rows = [json.loads(line) for line in (tmp_path / "given" / "critic_model_hf" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("critic/requests", 0) for r in rows) > 0


# ---------------------------------------------------------------------------- Critique-GRPO with a served critic model
SLOW = os.environ.get("CRITIQUE_RL_SLOW_TESTS") == "1"


def rescue_overrides(policy, critic_dir, url: str) -> list[str]:
    """Critique-GRPO on hard problems only (all-fail groups) with the served critic model; the fallback
    critique is the bare verdict, so no rescue comes from a ground-truth fallback."""
    return [f"model.name_or_path={policy}", "method=critique_grpo", "critic.backend=openai", f"critic.base_url={url}",
            f"critic.model={critic_dir}", "critic.api_key_env=", "critic.api=completions", "critic.max_tokens=80",
            "critic.temperature=0.5", "critic.fallback=indicative", "critic.timeout_s=120", "critic.cache=false",
            "train.steps=3", "train.prompts_per_step=8", "task.train_hard_fraction=1.0", "train.samples_per_step=8",
            "eval.every=0", "task.eval_easy=8", "task.eval_hard=8", "eval.pass_n=2", "eval.pass_k=1", "eval.probe_prompts=0"]


@needs_serve
@pytest.mark.skipif(not SLOW, reason="trains a usable critic model and policy, ~15 min on one CPU thread: set CRITIQUE_RL_SLOW_TESTS=1")
def test_critique_grpo_rescues_groups_with_a_served_critic_model(tmp_path_factory):
    """Critique-GRPO steps whose critic is the critic model behind the openai backend, served by
    `transformers serve`: groups whose attempts all failed are rescued by refinements written from
    the server's critiques (not from fallbacks).

    It needs a critic that critiques and a policy that uses critiques: the default critic model
    (critic_model: 1000 steps, 577 s) and the toy warm start (900 steps, 489 s), measured at one
    torch thread on a 2-core machine shared with other jobs; the three RL steps and the server
    take ~30 s more. With them, 19 of 24 all-fail groups were rescued over the three steps (refine
    success 0.61-0.77, no fallbacks); a 600-step critic model rescued 1 of 24: too few to test on.
    """
    from critique_rl.pipeline import ensure_critic_model, ensure_warm_start, run_training

    base = tmp_path_factory.mktemp("rescue")
    cfg = load_config("toy", ["critic_model.eval_problems=0"])
    critic_dir = ensure_critic_model(cfg, base, show_progress=False)
    policy = ensure_warm_start(cfg, base, show_progress=False)
    with open(base / "serve.log", "w") as log, transformers_serve(str(critic_dir), log=log) as url:
        run_dir = base / "run"
        run_training(load_config("toy", rescue_overrides(policy, critic_dir, url)), run_dir, show_progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "refine/groups_rescued" in r]
    assert len(trained) == 3 and all(r["critic/requests"] > 0 for r in trained)
    assert sum(r["refine/groups_rescued"] for r in trained) > 0
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    rescues = [ref for s in samples if all(a["reward"] <= 0 for a in s["attempts"])
               for ref in s.get("refinements", []) if ref["chosen"] and ref["reward"] > 0]
    assert rescues and any(ref["critique_fallback"] is None for ref in rescues)
