"""vLLM colocated with the trainer: one process, one GPU (or a tensor-parallel group), shared memory.

Supported vLLM: **0.27 to 0.30** (``pip install 'critique-rl[vllm]'``), the releases built on
torch 2.13.0, the torch this project pins, and with no upper bound on transformers. The engine
uses only vLLM's public surface: ``LLM``, ``SamplingParams``, ``LLM.generate`` with token-id
prompts, ``LLM.apply_model``, ``LLM.reset_prefix_cache``, ``LLM.sleep``/``wake_up``.

* Prompts go in as token ids (the policy's tokenizer, no special tokens added, as the ``hf``
  engine does), so ``prompt_ids`` are exactly what vLLM conditioned on; ``completion_ids`` are
  the sampled ids (end-of-sequence included when it ended the completion).
* ``n`` samples per prompt with ``SamplingParams(n=...)``; ``logprobs=0`` returns the sampled
  token's log-prob, reported in ``Completion.logprobs`` (``logprobs_mode='processed_logprobs'``:
  after temperature and top-p, the distribution actually sampled).
* Weights: after each optimizer step ``sync_weights`` marks vLLM's copy stale; the next
  ``generate`` loads the policy's current weights into it (LoRA merged, names as transformers
  writes them) and resets the prefix cache. The first ``generate`` loads them too (resumed runs,
  policies changed in memory). With one GPU the engine runs in-process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocate mode) and the tensors are handed over
  directly (``apply_model(lambda m: m.load_weights(...))``). With several trainer processes
  (torchrun, accelerate) each runs its own vLLM in-process with
  ``distributed_executor_backend='external_launcher'``, as TRL does. With tensor parallelism in a
  single process the workers are processes of their own: the weights go through a directory
  under ``<run_dir>/rollout_weights`` that each worker reads.
* ``rollout.vllm_enable_sleep_mode``: after each ``generate`` vLLM sleeps (level 1: weights to
  CPU, KV cache freed) so the training pass has the GPU memory, and wakes up for the next one.

Everything that does not need vLLM (request outputs to ``[prompt][sample]`` completions,
truncation, log-probs) is in pure functions tested on CPU with objects shaped like vLLM's.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

from critique_rl.distributed import Distributed
from critique_rl.rollout.base import Completion, LongPrompts, SamplingParams, context_length, with_skipped
from critique_rl.rollout.weights import merged_state_dict, policy_path, save_policy

SUPPORTED = ">=0.27,<0.31"
INSTALL_HINT = "rollout.engine=vllm needs vllm: pip install 'critique-rl[vllm]' on a CUDA machine"


def import_vllm():
    """The vllm module, or an ImportError that says how to get it."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from None
    return vllm


# ---------------------------------------------------------------------------- pure functions
def sampling_kwargs(params: SamplingParams, n: int, eos_token_id: int | None = None) -> dict:
    """Keyword arguments of ``vllm.SamplingParams`` for ``n`` samples of ``params``.

    >>> kw = sampling_kwargs(SamplingParams(16, temperature=0.7, top_p=0.9), 4)
    >>> kw["n"], kw["temperature"], kw["top_p"], kw["top_k"], kw["max_tokens"], kw["logprobs"]
    (4, 0.7, 0.9, -1, 16, 0)
    >>> sampling_kwargs(SamplingParams(16, greedy=True), 1)["temperature"]
    0.0
    """
    temperature, top_p = (0.0, 1.0) if params.greedy else (params.temperature, params.top_p)
    kw = dict(n=n, temperature=temperature, top_p=top_p, top_k=-1, min_p=0.0, repetition_penalty=1.0,
              max_tokens=params.max_new_tokens, logprobs=0, skip_special_tokens=True)
    if eos_token_id is not None:
        kw["stop_token_ids"] = [eos_token_id]
    return kw


def is_truncated(finish_reason: str | None, num_tokens: int, max_tokens: int | None = None) -> bool:
    """A completion cut by the token limit: finish_reason 'length' (or none given and the limit reached).

    >>> is_truncated("length", 3), is_truncated("stop", 3), is_truncated(None, 8, 8)
    (True, False, True)
    """
    if finish_reason is None:
        return max_tokens is not None and num_tokens >= max_tokens
    return finish_reason == "length"


def sampled_logprobs(token_ids: Sequence[int], logprobs: Any) -> list[float] | None:
    """The log-prob of each sampled token from vLLM's per-position ``{token_id: Logprob}`` entries.

    Entries may be dicts of Logprob objects (``.logprob``) or of floats; None when vLLM returned
    none or an entry lacks its sampled token.

    >>> from types import SimpleNamespace as NS
    >>> sampled_logprobs([5, 1], [{5: NS(logprob=-0.5), 7: NS(logprob=-1.0)}, {1: NS(logprob=-0.25)}])
    [-0.5, -0.25]
    >>> sampled_logprobs([5], None) is None, sampled_logprobs([5], [{6: -1.0}]) is None
    (True, True)
    """
    if logprobs is None or len(logprobs) != len(token_ids):
        return None
    out = []
    for token, entry in zip(token_ids, logprobs):
        try:
            value = entry[token]
        except (KeyError, IndexError, TypeError):
            return None
        out.append(float(getattr(value, "logprob", value)))
    return out


def completion_from_output(prompt_ids: Sequence[int], output: Any, max_tokens: int | None = None) -> Completion:
    """One vLLM ``CompletionOutput`` (``token_ids``, ``text``, ``finish_reason``, ``logprobs``) as a Completion."""
    ids = [int(t) for t in output.token_ids]
    return Completion(list(prompt_ids), ids, output.text, is_truncated(output.finish_reason, len(ids), max_tokens),
                      sampled_logprobs(ids, getattr(output, "logprobs", None)))


def completions_from_outputs(request_outputs: Sequence[Any], num_samples: int, max_tokens: int | None = None,
                             prompt_ids: Sequence[Sequence[int]] | None = None) -> list[list[Completion]]:
    """vLLM ``RequestOutput``s, one per prompt in order, as ``[prompt][sample]`` Completions.

    Samples are ordered by their ``index``; a prompt with other than ``num_samples`` outputs is
    an error. ``prompt_ids`` default to each output's ``prompt_token_ids``.
    """
    result = []
    for p, request in enumerate(request_outputs):
        outputs = sorted(request.outputs, key=lambda o: getattr(o, "index", 0))
        if len(outputs) != num_samples:
            raise RuntimeError(f"vLLM returned {len(outputs)} completions for prompt {p}, expected {num_samples}")
        ids = prompt_ids[p] if prompt_ids is not None else request.prompt_token_ids
        result.append([completion_from_output(ids, o, max_tokens) for o in outputs])
    return result


# ---------------------------------------------------------------------------- weight loading in workers
def _load_into(model, weights) -> None:
    model.load_weights(weights)


def _load_directory(model, path: str) -> None:
    """Runs in each vLLM worker: load the safetensors files of ``path`` into its model shard."""
    from safetensors.torch import safe_open

    def tensors():
        for file in sorted(Path(path).glob("*.safetensors")):
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)

    model.load_weights(tensors())


# ---------------------------------------------------------------------------- the engine
class VLLMEngine:
    def __init__(self, cfg, model, tokenizer, run_dir: Path):
        vllm = import_vllm()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("rollout.engine=vllm needs a CUDA GPU; use rollout.engine=hf or server here")
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.weights_root = Path(run_dir) / "rollout_weights"
        self._vllm = vllm
        tp = cfg.vllm_tensor_parallel_size
        processes = Distributed()
        world, rank = processes.world_size, processes.rank
        extra: dict = {}
        if world > 1:
            # Data-parallel trainer processes (torchrun, accelerate): each runs its own vLLM in-process on
            # its own GPU, as TRL's colocate mode does; processes of one tensor-parallel group share a seed.
            extra["distributed_executor_backend"] = "external_launcher"
        self.in_process = world > 1 or tp == 1
        if self.in_process:
            # The engine core in this process, so apply_model can hand over tensors without copies.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            self.in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        path = policy_path(model)
        if not path or not (Path(path) / "config.json").is_file():
            path = str(save_policy(model, tokenizer, self.weights_root, f"vllm-init-rank{rank}", 1))
        kwargs = dict(model=path, tokenizer=path, dtype=cfg.vllm_dtype, seed=cfg.vllm_seed + rank // tp,
                      gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                      tensor_parallel_size=tp, enable_sleep_mode=cfg.vllm_enable_sleep_mode,
                      enforce_eager=cfg.vllm_enforce_eager, max_model_len=cfg.vllm_max_model_len or None,
                      logprobs_mode="processed_logprobs", **extra)
        try:
            self.llm = vllm.LLM(**kwargs)
        except TypeError as err:          # a vLLM without logprobs_mode: raw log-probs then
            if "logprobs_mode" not in str(err):
                raise
            kwargs.pop("logprobs_mode")
            self.llm = vllm.LLM(**kwargs)
        self.long_prompts = LongPrompts(cfg.long_prompt, cfg.vllm_max_model_len or context_length(model.config, tokenizer))
        self.stale = True                 # vLLM's copy may differ from the policy until the first load
        self.asleep = False
        self.syncs = 0
        self._step: int | None = None

    def sync_weights(self, step: int) -> None:
        """Mark vLLM's weights stale; the next generate loads the policy's (awake, once)."""
        self.stale, self._step = True, step

    def generate(self, prompts: list[str], num_samples: int, params: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        self._wake()
        if self.stale:
            self._load_weights()
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        # vLLM refuses a prompt longer than max_model_len outright: rollout.long_prompt applies first.
        prompt_ids, skipped = self.long_prompts.fit(prompt_ids, params.max_new_tokens)
        kept = [ids for ids, skip in zip(prompt_ids, skipped) if not skip]
        sampling = self._vllm.SamplingParams(**sampling_kwargs(params, num_samples, self.tokenizer.eos_token_id))
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in kept], sampling, use_tqdm=False) if kept else []
        result = completions_from_outputs(outputs, num_samples, params.max_new_tokens, kept)
        self._sleep()
        return with_skipped(result, prompt_ids, skipped, num_samples)

    def metrics(self) -> dict[str, float]:
        """Prompts cut or skipped for being longer than the context, since the last call."""
        return self.long_prompts.metrics()

    # ------------------------------------------------------------------ internals
    def _load_weights(self) -> None:
        import torch

        if self.in_process:
            with torch.no_grad(), merged_state_dict(self.model) as state:
                self.llm.apply_model(functools.partial(_load_into, weights=list(state.items())))
        else:                             # tensor-parallel workers in their own processes read a directory
            name = "vllm-sync" if self._step is None else f"step-{self._step}"
            path = save_policy(self.model, self.tokenizer, self.weights_root, name, 1)
            self.llm.apply_model(functools.partial(_load_directory, path=str(path)))
        self.llm.reset_prefix_cache()
        self.stale = False
        self.syncs += 1

    def _wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def _sleep(self) -> None:
        if self.cfg.vllm_enable_sleep_mode:
            self.llm.sleep(level=1)
            self.asleep = True
