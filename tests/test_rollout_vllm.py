"""The vllm rollout engine. On CPU: the conversion of vLLM's outputs (plain objects shaped like
them), the engine's call sequence against a stand-in vllm module (weights loaded before the
first generate and after each sync, sleep and wake-up), the LoRA-merged weight export, and the
install hint. On a CUDA machine with vllm installed: the real engine and a short training run."""

import importlib.util
import json
import os
import sys
import types
from types import SimpleNamespace as NS

import pytest
import torch

from critique_rl.config import load_config
from critique_rl.modeling import load_policy
from critique_rl.rollout import SamplingParams, build_engine
from critique_rl.rollout.vllm_engine import (
    INSTALL_HINT,
    completions_from_outputs,
    is_truncated,
    sampled_logprobs,
    sampling_kwargs,
)
from critique_rl.rollout.weights import merged_state_dict, save_policy


def output(index, ids, text, finish, logprob=None):
    """A vLLM CompletionOutput look-alike; logprob: the value given to every sampled token."""
    lps = None if logprob is None else [{t: NS(logprob=logprob, rank=1), t + 1: NS(logprob=-9.0, rank=2)} for t in ids]
    return NS(index=index, token_ids=tuple(ids), text=text, finish_reason=finish, logprobs=lps, stop_reason=None)


def test_request_outputs_become_prompt_by_sample_completions():
    outs = [NS(prompt_token_ids=[4, 5], outputs=[output(1, [7, 1], "b", "stop", -0.5), output(0, [6, 6, 6], "a", "length", -0.25),
                                                 output(2, [8, 1], "c", "stop", -1.5)]),
            NS(prompt_token_ids=[9], outputs=[output(0, [5], "d", "length"), output(2, [1], "", "stop"),
                                              output(1, [6, 1], "e", "stop")])]
    got = completions_from_outputs(outs, 3, max_tokens=3)
    assert [[c.text for c in g] for g in got] == [["a", "b", "c"], ["d", "e", ""]]       # ordered by index
    assert [[c.truncated for c in g] for g in got] == [[True, False, False], [True, False, False]]
    assert got[0][1].prompt_ids == [4, 5] and got[0][1].completion_ids == [7, 1]
    assert got[0][0].logprobs == [-0.25] * 3 and got[1][0].logprobs is None
    ids = [[1, 2], [3]]
    assert completions_from_outputs(outs, 3, prompt_ids=ids)[1][0].prompt_ids == [3]
    with pytest.raises(RuntimeError, match="2 completions for prompt 0, expected 3"):
        completions_from_outputs([NS(prompt_token_ids=[1], outputs=[output(0, [1], "", "stop")] * 2)], 3)


def test_truncation_logprobs_and_sampling_params():
    assert is_truncated("length", 1) and not is_truncated("stop", 99, 99) and is_truncated(None, 4, 4)
    assert not is_truncated(None, 3, 4) and not is_truncated("abort", 1)
    assert sampled_logprobs([3, 4], [{3: -0.1}, {4: NS(logprob=-0.2)}]) == [-0.1, -0.2]     # floats or Logprob objects
    assert sampled_logprobs([3, 4], [{3: -0.1}]) is None                                     # lengths differ
    kw = sampling_kwargs(SamplingParams(7, temperature=0.8, top_p=0.5), 5, eos_token_id=1)
    assert kw == dict(n=5, temperature=0.8, top_p=0.5, top_k=-1, min_p=0.0, repetition_penalty=1.0, max_tokens=7,
                      logprobs=0, skip_special_tokens=True, stop_token_ids=[1])
    assert sampling_kwargs(SamplingParams(7, temperature=0.8, greedy=True), 1)["temperature"] == 0.0


def test_missing_vllm_gives_the_install_hint(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)             # import vllm raises ImportError, installed or not
    model, tok = load_policy(str(tiny_model_dir), load_config("tiny").model)
    cfg = load_config("tiny", ["rollout.engine=vllm"]).rollout
    with pytest.raises(ImportError, match="pip install 'critique-rl\\[vllm\\]' on a CUDA machine") as err:
        build_engine(cfg, model, tok, tmp_path)
    assert str(err.value).startswith(INSTALL_HINT)


class FakeLLM:
    """Records the calls the engine makes; generates token i+1 for sample i, then eos."""

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.loaded = kwargs, [], None

    def apply_model(self, func):
        self.calls.append("load")
        func(self)                                  # the fake is its own "model": load_weights below

    def load_weights(self, weights):
        self.loaded = {name: t.clone() for name, t in weights}

    def reset_prefix_cache(self):
        self.calls.append("reset")

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self):
        self.calls.append("wake")

    def generate(self, prompts, sampling, use_tqdm):
        self.calls.append("generate")
        n, eos = sampling.n, sampling.stop_token_ids[0]
        return [NS(prompt_token_ids=p["prompt_token_ids"],
                   outputs=[output(i, [10 + i, eos], chr(ord("a") + i), "stop", -0.1) for i in range(n)]) for p in prompts]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: NS(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "")    # recorded, so the engine's setting is undone
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    return module


@pytest.mark.parametrize("sleep", [False, True])
def test_engine_loads_weights_before_first_generate_and_after_each_sync(fake_vllm, tiny_model_dir, tmp_path, sleep):
    model, tok = load_policy(str(tiny_model_dir), load_config("tiny", ["model.device=cpu"]).model)
    cfg = load_config("tiny", ["rollout.engine=vllm", f"rollout.vllm_enable_sleep_mode={str(sleep).lower()}",
                               "rollout.vllm_gpu_memory_utilization=0.4"]).rollout
    engine = build_engine(cfg, model, tok, tmp_path)
    llm = engine.llm
    assert llm.kwargs["model"] == str(tiny_model_dir) and llm.kwargs["gpu_memory_utilization"] == 0.4
    assert llm.kwargs["enable_sleep_mode"] is sleep and llm.kwargs["max_model_len"] is None
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and engine.in_process

    out = engine.generate(["1+1", "2+2"], 3, SamplingParams(4))
    assert [[c.text for c in g] for g in out] == [["a", "b", "c"]] * 2
    assert out[1][2].prompt_ids == tok("2+2", add_special_tokens=False)["input_ids"]
    assert out[0][1].completion_ids == [11, tok.eos_token_id] and out[0][1].logprobs == [-0.1, -0.1]
    engine.generate(["1+1"], 1, SamplingParams(4))                  # no sync in between: no reload
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    engine.sync_weights(1)
    engine.generate(["1+1"], 1, SamplingParams(4))
    torch.testing.assert_close(llm.loaded["lm_head.weight"], model.lm_head.weight)
    cycle = ["generate", "sleep1"] if sleep else ["generate"]
    wake = ["wake"] if sleep else []
    assert llm.calls == ["load", "reset", *cycle, *wake, *cycle, *wake, "load", "reset", *cycle]
    assert engine.syncs == 2


def test_lora_policy_is_exported_merged_with_plain_names(tiny_model_dir, tmp_path):
    pytest.importorskip("peft")
    cfg = load_config("tiny", ["model.lora_r=4", "model.lora_target_modules=q_proj,v_proj"]).model
    model, tok = load_policy(str(tiny_model_dir), cfg)
    with torch.no_grad():                       # LoRA B starts at zero: make the adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
    plain, _ = load_policy(str(tiny_model_dir), load_config("tiny").model)
    with merged_state_dict(model) as state:
        assert set(state) == set(plain.state_dict())
        q = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.allclose(state[q], plain.state_dict()[q])
        merged = {k: v.clone() for k, v in state.items()}
    # the adapters are unmerged again afterwards
    base = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    torch.testing.assert_close(base, plain.state_dict()[q])
    path = save_policy(model, tok, tmp_path / "w", "step-1", keep=1)
    reloaded, _ = load_policy(str(path), load_config("tiny").model)
    torch.testing.assert_close(reloaded.state_dict()[q], merged[q])
    x = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(reloaded(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- GPU machines
needs_vllm_gpu = pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                                    reason="needs vllm and a CUDA GPU")


@pytest.fixture(scope="module")
def gpu_model_dir(tmp_path_factory):
    """A small random Qwen2 with head size 64 (vLLM's attention kernels want >= 32) and the char tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from critique_rl.modeling import build_char_tokenizer

    path = tmp_path_factory.mktemp("gpu-model")
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                 tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 bos_token_id=tok.bos_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def policy_logprobs(model, prompt_ids, completion_ids) -> torch.Tensor:
    """The policy's log-prob of each completion token (temperature 1)."""
    ids = torch.tensor([prompt_ids + completion_ids], device=model.device)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return logp[len(prompt_ids) - 1:].gather(-1, ids[0, len(prompt_ids):, None]).squeeze(-1).cpu()


@needs_vllm_gpu
def test_real_vllm_engine_samples_and_follows_the_weights(gpu_model_dir, tmp_path):
    model, tok = load_policy(str(gpu_model_dir), load_config("tiny", ["model.device=cuda"]).model)
    cfg = load_config("tiny", ["rollout.engine=vllm", "rollout.vllm_gpu_memory_utilization=0.2", "rollout.vllm_dtype=float32",
                               "rollout.vllm_enforce_eager=true", "rollout.vllm_max_model_len=256"]).rollout
    engine = build_engine(cfg, model, tok, tmp_path)
    prompts = ["12+34+5", "47+38+29"]
    out = engine.generate(prompts, 3, SamplingParams(16, temperature=1.0))
    assert [len(g) for g in out] == [3, 3]
    for p, g in zip(prompts, out):
        for c in g:
            assert c.prompt_ids == tok(p, add_special_tokens=False)["input_ids"]
            assert tok.decode(c.completion_ids, skip_special_tokens=True) == c.text
            assert c.truncated == (c.completion_ids[-1] != tok.eos_token_id)
            assert c.logprobs is not None and len(c.logprobs) == len(c.completion_ids)
            # vLLM sampled from the policy's own distribution
            diff = (torch.tensor(c.logprobs) - policy_logprobs(model, c.prompt_ids, c.completion_ids)).abs().max()
            assert diff < 1e-2, diff
    with torch.no_grad():                                           # a large update
        gen = torch.Generator(device="cpu").manual_seed(1)
        for p in model.parameters():
            p.copy_((torch.randn(p.shape, generator=gen) * 0.5).to(p.device))
    engine.sync_weights(1)
    c = engine.generate(prompts[:1], 1, SamplingParams(16, temperature=1.0))[0][0]
    diff = (torch.tensor(c.logprobs) - policy_logprobs(model, c.prompt_ids, c.completion_ids)).abs().max()
    assert diff < 1e-2, f"vLLM does not sample from the synced weights ({diff})"
    assert engine.syncs == 2


@needs_vllm_gpu
def test_training_with_the_vllm_engine(gpu_model_dir, tmp_path):
    from critique_rl.pipeline import run_training

    cfg = load_config("tiny", [f"model.name_or_path={gpu_model_dir}", "model.device=cuda", "method=critique_grpo",
                               "train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=3", "eval.every=0",
                               "task.eval_easy=8", "task.eval_hard=8", "eval.pass_n=2", "eval.pass_k=1",
                               "rollout.max_completion_length=24", "rollout.engine=vllm",
                               "rollout.vllm_gpu_memory_utilization=0.2", "rollout.vllm_enforce_eager=true",
                               "rollout.vllm_max_model_len=256"])
    run_training(cfg, tmp_path / "run", show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["step"] > 0] == [1, 2] and (tmp_path / "run" / "final_eval.json").is_file()
