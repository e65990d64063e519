"""The server rollout engine: against a real `transformers serve` with the tiny model, and against
scripted responses (httpx MockTransport) for what that server cannot show: vLLM's exact ids and
n, dialect probing, malformed bodies, retries, the http weight sync."""

import json

import httpx
import pytest
import torch

from critique_rl.config import ConfigError, load_config
from critique_rl.modeling import load_policy
from critique_rl.rollout import HFEngine, SamplingParams, build_engine
from critique_rl.rollout.server import RolloutServerError, ServerEngine
from tests.conftest import free_port, needs_serve, transformers_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`transformers serve` on 127.0.0.1 WITHOUT a model argument, so requests name the model
    (a directory) and it loads each on demand; yields (base URL, path of its log)."""
    logfile = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(logfile, "w") as log, transformers_serve(log=log) as url:
        yield url, logfile


def rollout_cfg(base_url: str, *overrides: str):
    return load_config("tiny", ["rollout.engine=server", f"rollout.server_base_url={base_url}", "rollout.server_timeout_s=60",
                                "rollout.server_max_concurrency=8", *overrides]).rollout


PROMPTS = ["12+34+5", "47+38+29", "9+9+9"]


def check_ids(completions, prompts, tokenizer):
    """prompt_ids are the prompt's tokens; completion ids decode to the text, eos last unless truncated."""
    for prompt, group in zip(prompts, completions):
        for c in group:
            assert c.prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(c.completion_ids, skip_special_tokens=True) == c.text
            assert (c.completion_ids[-1] == tokenizer.eos_token_id) != c.truncated


# ---------------------------------------------------------------------------- real transformers serve
@needs_serve
def test_generate_n_per_prompt_through_transformers_serve(served, tiny_model_dir, tmp_path):
    url, _ = served
    model, tok = load_policy(str(tiny_model_dir), load_config("tiny").model)
    engine = build_engine(rollout_cfg(url, "rollout.weight_sync=none", f"rollout.server_model={tiny_model_dir}"),
                          model, tok, tmp_path)
    out = engine.generate(PROMPTS, 3, SamplingParams(12, temperature=1.0))
    assert [len(g) for g in out] == [3, 3, 3]
    # transformers serve ignores n and returns no logprobs: one request per sample, ids re-tokenized
    assert (engine.dialect, engine.supports_n, engine.exact_ids, engine.returns_logprobs) == ("transformers", False, False, False)
    check_ids(out, PROMPTS, tok)
    assert all(c.logprobs is None for g in out for c in g)
    assert len({c.text for c in out[1]}) > 1, "samples of one prompt are all the same: sampling is not on"
    metrics = engine.metrics()
    assert metrics["rollout/samples"] == 9 and metrics["rollout/ids_retokenized"] == 9
    assert metrics["rollout/requests"] >= 9 and engine.ids_inexact == metrics.get("rollout/ids_inexact", 0)
    # greedy on the server is greedy here, token for token
    greedy = SamplingParams(12, greedy=True)
    local = HFEngine(model, tok).generate(PROMPTS[:1], 1, greedy)[0][0]
    assert engine.generate(PROMPTS[:1], 1, greedy)[0][0].text == local.text
    assert not (tmp_path / "rollout_weights").exists()        # weight_sync none writes nothing
    engine.close()


@needs_serve
def test_reload_serves_the_new_weights(served, tiny_model_dir, tmp_path):
    """After sync_weights the server's greedy output is the updated policy's, not the old one's."""
    url, log = served
    model, tok = load_policy(str(tiny_model_dir), load_config("tiny").model)
    engine = build_engine(rollout_cfg(url, "rollout.weight_sync=reload", "rollout.weight_sync_keep=2"), model, tok, tmp_path)
    greedy = SamplingParams(16, greedy=True)
    before = engine.generate(PROMPTS, 1, greedy)
    assert engine.synced_dir == tmp_path / "rollout_weights" / "initial"
    with torch.no_grad():                                      # a large update: new random weights
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    local = HFEngine(model, tok).generate(PROMPTS, 1, greedy)
    assert [g[0].text for g in local] != [g[0].text for g in before]
    engine.sync_weights(1)
    after = engine.generate(PROMPTS, 1, greedy)
    assert [g[0].text for g in after] == [g[0].text for g in local]
    engine.sync_weights(2)
    engine.sync_weights(3)
    names = sorted(p.name for p in (tmp_path / "rollout_weights").iterdir())
    assert names == ["step-2", "step-3"]                        # pruned to weight_sync_keep, no temporaries
    assert engine.requested_models == [str(tmp_path / "rollout_weights" / n) for n in ("initial", "step-1")]
    assert f"Model: {tmp_path / 'rollout_weights' / 'step-1'}" in log.read_text()
    assert engine.metrics()["rollout/weight_syncs"] == 4
    engine.close()


@needs_serve
def test_training_with_server_engine_and_reload(served, train_short):
    url, log = served
    run_dir = train_short("rollout.engine=server", f"rollout.server_base_url={url}", "rollout.weight_sync=reload",
                          "rollout.weight_sync_keep=3", "rollout.server_timeout_s=60")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["step"] > 0]
    assert [r["step"] for r in trained] == [1, 2] and (run_dir / "final_eval.json").is_file()
    assert all(r["completions/mean_length"] > 0 for r in trained)
    weights = run_dir / "rollout_weights"
    assert sorted(p.name for p in weights.iterdir()) == ["initial", "step-1", "step-2"]
    assert (weights / "step-2" / "model.safetensors").is_file() and (weights / "step-2" / "tokenizer.json").is_file()
    text = log.read_text()
    for name in ("initial", "step-1", "step-2"):               # the server was asked for each synced directory
        assert f"Model: {weights / name}," in text


# ---------------------------------------------------------------------------- faults
def test_unreachable_server_names_url_and_key(tiny_model_dir, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"                  # nothing listens there
    model, tok = load_policy(str(tiny_model_dir), load_config("tiny").model)
    with pytest.raises(RolloutServerError) as err:
        build_engine(rollout_cfg(url), model, tok, tmp_path)
    assert url in str(err.value) and "rollout.server_base_url" in str(err.value)


def test_server_engine_config_is_checked():
    with pytest.raises(ConfigError, match="rollout.server_base_url"):
        load_config("tiny", ["rollout.engine=server"])
    with pytest.raises(ConfigError, match="rollout.weight_sync_url"):
        load_config("tiny", ["rollout.engine=server", "rollout.server_base_url=http://x/v1", "rollout.weight_sync=http"])


# ---------------------------------------------------------------------------- scripted endpoints
class Script:
    """A fake endpoint: ``handler(path, body) -> (status, json)``; records every request."""

    def __init__(self, handler):
        self.handler, self.requests = handler, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.url.path, body))
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})
        status, payload = self.handler(request.url.path, body)
        return httpx.Response(status, json=payload)


def vllm_like(tok, text="7+8=15", finish="stop"):
    """A vLLM /completions handler: honours n, returns token ids as 'token_id:N' with logprobs."""
    ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finish == "stop" else [])

    def handler(path, body):
        if "top_k" not in body:
            return 400, {"error": {"message": "vllm dialect expected"}}
        choice = {"text": text, "finish_reason": finish,
                  "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [-0.5] * len(ids)}}
        return 200, {"choices": [{**choice, "index": k} for k in range(body.get("n", 1))]}
    return handler


def scripted_engine(tmp_path, tiny_model_dir, handler, *overrides):
    model, tok = load_policy(str(tiny_model_dir), load_config("tiny").model)
    script = Script(handler)
    cfg = rollout_cfg("http://fake/v1", "rollout.server_max_retries=2", *overrides)
    return ServerEngine(cfg, model, tok, tmp_path, transport=httpx.MockTransport(script)), script, tok


def test_vllm_dialect_exact_ids_n_and_logprobs(tmp_path, tiny_model_dir):
    engine, script, tok = scripted_engine(tmp_path, tiny_model_dir, vllm_like(load_policy(str(tiny_model_dir), load_config("tiny").model)[1]),
                                          "rollout.weight_sync=none", "rollout.server_model=m")
    out = engine.generate(PROMPTS, 4, SamplingParams(8, temperature=0.9, top_p=0.95))
    assert (engine.dialect, engine.supports_n, engine.exact_ids) == ("vllm", True, True)
    assert [len(g) for g in out] == [4, 4, 4]
    check_ids(out, PROMPTS, tok)
    assert out[0][0].logprobs == [-0.5] * len(out[0][0].completion_ids)
    completions = [b for p, b in script.requests if p.endswith("/completions")][1:]       # after the probe
    assert len(completions) == 3 and all(b["n"] == 4 and b["temperature"] == 0.9 and b["top_p"] == 0.95 for b in completions)
    assert completions[0]["prompt"] == tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    assert engine.metrics().get("rollout/ids_retokenized", 0) == 0


def test_probe_falls_back_to_the_dialect_the_server_accepts(tmp_path, tiny_model_dir):
    def transformers_like(path, body):
        extra = set(body) - {"model", "prompt", "max_tokens", "n", "temperature", "top_p", "logprobs", "generation_config"}
        if extra:
            return 422, {"detail": f"Unexpected fields in the request: {extra}"}
        return 200, {"choices": [{"index": 0, "text": "1+1=2", "finish_reason": "length"}]}

    engine, script, tok = scripted_engine(tmp_path, tiny_model_dir, transformers_like, "rollout.weight_sync=none",
                                          "rollout.server_model=m")
    out = engine.generate(PROMPTS[:2], 3, SamplingParams(5))
    assert (engine.dialect, engine.supports_n) == ("transformers", False)
    assert [len(g) for g in out] == [3, 3] and all(c.truncated and c.completion_ids[-1] != tok.eos_token_id for g in out for c in g)
    sent = [b for p, b in script.requests if p.endswith("/completions")]
    assert json.loads(sent[-1]["generation_config"])["do_sample"] is True and "n" not in sent[-1]


@pytest.mark.parametrize("payload, missing", [
    ({"object": "error"}, "no 'choices' list"),
    ({"choices": [{"index": 0, "finish_reason": "stop"}]}, "no 'text' string"),
    ({"choices": [{"index": 0, "text": "x", "finish_reason": "abort"}]}, "finish_reason"),
])
def test_malformed_responses_name_what_is_missing(tmp_path, tiny_model_dir, payload, missing):
    engine, _, _ = scripted_engine(tmp_path, tiny_model_dir, lambda path, body: (200, payload), "rollout.weight_sync=none",
                                   "rollout.server_model=m", "rollout.server_dialect=openai")
    with pytest.raises(RolloutServerError, match=missing):
        engine.generate(PROMPTS[:1], 1, SamplingParams(4))


def test_fewer_choices_than_n_is_an_error(tmp_path, tiny_model_dir):
    def one_choice_after_probe(path, body):
        n = 2 if body["max_tokens"] == 1 else 1           # honours n in the probe, not later
        return 200, {"choices": [{"index": k, "text": "x", "finish_reason": "length"} for k in range(n)]}

    engine, _, _ = scripted_engine(tmp_path, tiny_model_dir, one_choice_after_probe, "rollout.weight_sync=none",
                                   "rollout.server_model=m", "rollout.server_dialect=openai")
    with pytest.raises(RolloutServerError, match="asked for 3 choice"):
        engine.generate(PROMPTS[:1], 3, SamplingParams(4))


def test_transient_errors_are_retried_then_reported(tmp_path, tiny_model_dir):
    calls = []

    def flaky(path, body):
        calls.append(1)
        if len(calls) <= 2:
            return 503, {"detail": "warming up"}
        return 200, {"choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}

    engine, _, _ = scripted_engine(tmp_path, tiny_model_dir, flaky, "rollout.weight_sync=none", "rollout.server_model=m",
                                   "rollout.server_dialect=openai")
    assert engine.generate(PROMPTS[:1], 1, SamplingParams(4))[0][0].text == "x"
    assert engine.metrics()["rollout/retries"] == 2
    engine, _, _ = scripted_engine(tmp_path, tiny_model_dir, lambda p, b: (503, {"detail": "down"}), "rollout.weight_sync=none",
                                   "rollout.server_model=m", "rollout.server_dialect=openai")
    with pytest.raises(RolloutServerError, match="failed after 3 attempt.*HTTP 503: down"):
        engine.generate(PROMPTS[:1], 1, SamplingParams(4))


def test_fixed_model_server_explains_reload(tmp_path, tiny_model_dir):
    engine, _, _ = scripted_engine(tmp_path, tiny_model_dir,
                                   lambda p, b: (404, {"error": {"message": f"The model `{b['model']}` does not exist."}}))
    with pytest.raises(RolloutServerError, match="404.*does not exist.*rollout.weight_sync http"):
        engine.generate(PROMPTS[:1], 1, SamplingParams(4))


def test_http_weight_sync_posts_the_directory_and_fails_clearly(tmp_path, tiny_model_dir):
    reloads = []

    def handler(path, body):
        if path == "/reload":
            reloads.append(body)
            return (200, {}) if body["step"] in (None, 1) else (500 if body["step"] == 3 else 409, {"detail": "busy"})
        return vllm_like(tok)(path, body)

    tok = load_policy(str(tiny_model_dir), load_config("tiny").model)[1]
    engine, script, _ = scripted_engine(tmp_path, tiny_model_dir, handler, "rollout.weight_sync=http", "rollout.server_model=m",
                                        "rollout.weight_sync_url=http://fake/reload")
    engine.generate(PROMPTS[:1], 2, SamplingParams(4))
    engine.sync_weights(1)
    engine.generate(PROMPTS[:1], 2, SamplingParams(4))
    root = tmp_path / "rollout_weights"
    assert reloads == [{"path": str(root / "initial"), "step": None}, {"path": str(root / "step-1"), "step": 1}]
    assert all(b["model"] == "m" for p, b in script.requests if p.endswith("/completions"))
    with pytest.raises(RolloutServerError, match="rollout.weight_sync_url http://fake/reload answered 409.*busy"):
        engine.sync_weights(2)


@pytest.mark.parametrize("policy", ["truncate_left", "skip"])
def test_prompts_longer_than_the_context_are_cut_or_skipped(tmp_path, tiny_model_dir, policy):
    tok = load_policy(str(tiny_model_dir), load_config("tiny").model)[1]
    long = "7" * 300 + "+1="                                  # the tiny model has 256 positions: 248 left beside 8 new
    engine, script, _ = scripted_engine(tmp_path, tiny_model_dir, vllm_like(tok), "rollout.weight_sync=none",
                                        "rollout.server_model=m", f"rollout.long_prompt={policy}")
    out = engine.generate([PROMPTS[0], long], 2, SamplingParams(8))
    sent = [b["prompt"] for p, b in script.requests if p.endswith("/completions")][1:]     # after the probe
    cut = tok(long, add_special_tokens=False)["input_ids"][-248:]
    assert [len(g) for g in out] == [2, 2] and all(c.prompt_ids == cut for c in out[1])
    if policy == "truncate_left":
        assert sent == [tok(PROMPTS[0], add_special_tokens=False)["input_ids"], cut] and out[1][0].text == "7+8=15"
        assert engine.metrics()["rollout/prompts_truncated"] == 1.0
    else:
        assert len(sent) == 1 and all(c.text == "" and c.completion_ids == [] and c.truncated for c in out[1])
        assert engine.metrics()["rollout/prompts_skipped"] == 1.0
