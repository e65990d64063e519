"""One typed config for every command, loaded from YAML and overridable on the CLI.

Every field carries its documentation in ``metadata["help"]``; ``critique-rl config show``
prints it. Unknown keys, wrong types and numbers outside the range a field declares (``ge``,
``gt``, ``le``, ``lt`` in its metadata) fail at load time with the key's dotted name and the
closest valid key, before anything is trained.

    >>> cfg = load_config("toy", overrides=["train.steps=10", "method=grpo"])
    >>> cfg.train.steps, cfg.method
    (10, 'grpo')
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names which and what was expected."""


# Bounds a numeric field may declare in its metadata: ``_f(0.2, "...", ge=0, le=1)``.
BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
          "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A config field: its default, its help, and for numbers its range (ge, gt, le, lt)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TaskConfig:
    name: Literal["arithmetic", "math"] = _f("arithmetic", "'arithmetic': the built-in synthetic task (sums of `num_terms` numbers, one addition per step; the fields below); 'math': real problems from `data.train`, scored by math-verify (`verifier`), evaluated on `benchmarks`.")
    num_terms: int = _f(3, "Numbers added per problem.", ge=2)
    min_operand: int = _f(10, "Smallest operand.", ge=0)
    max_operand: int = _f(99, "Largest operand.", ge=0)
    hard_threshold: int = _f(100, "Problems whose total is >= this are 'hard': their results never appear in warm-start solve data.", ge=0)
    train_hard_fraction: float = _f(0.5, "Share of hard problems among RL training prompts (the rest are easy, so the easy skill is rehearsed).", ge=0, le=1)
    eval_easy: int = _f(200, "Held-out easy problems for evaluation.", ge=1)
    eval_hard: int = _f(200, "Held-out hard problems for evaluation.", ge=1)


@dataclass
class DatasetSpec:
    name: str = _f("", "Name in tables, logs and sample records; empty: the path.")
    path: str = _f("", "A local .jsonl / .json / .parquet file, or a hub dataset id (e.g. openai/gsm8k).")
    split: str = _f("train", "Split to read: of the hub dataset; for a local file only the split's label.")
    config: str = _f("", "Hub dataset configuration (subset), e.g. 'main' for openai/gsm8k; empty: the default.")
    question_field: str = _f("question", "Field holding the question (a non-empty string).")
    answer_from: Literal["field", "boxed", "after_hashes"] = _f(
        "field", "'field': answer_field is the answer; 'boxed': the last \\boxed{} of solution_field; "
                 "'after_hashes': the text after the last '####' of solution_field (GSM8K).")
    answer_field: str = _f("answer", "Field holding the answer when answer_from = field: a string, a number (27.0 reads as '27') or a list of them (one item is taken as is, several are joined with ', ').")
    solution_field: str = _f("solution", "Field holding the worked solution when answer_from = boxed or after_hashes (also shown to critics as the reference solution when present): a string, or a list of strings joined with newlines.")
    on_bad_row: Literal["error", "skip"] = _f("error", "A malformed row (a JSONL line that is not a JSON object included): 'error' stops with file, row and field; 'skip' drops it and logs the count with the first one.")
    limit: int = _f(0, "Keep the first this many examples (0: all).", ge=0)


@dataclass
class DataConfig:
    train: DatasetSpec = field(default_factory=DatasetSpec, metadata={"help": "task.name = math: the RL training set (field mapping of a local file or hub dataset)."})


def read_yaml_file(path: str, label: str, missing: str) -> Any:
    """The parsed YAML of the file ``path``; ConfigError ``missing`` when there is no such file, and
    "LABEL: malformed YAML: ..." (the parser's message on one line) when it does not parse."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(missing)
    try:
        return yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{label}: malformed YAML: {' '.join(str(err).split())}") from None


def load_dataset_spec(source: str) -> DatasetSpec:
    """One DatasetSpec from a YAML file holding its mapping (the keys of ``data.train``), checked
    like a config: unknown keys and wrong types fail naming the file and the key."""
    data = read_yaml_file(source, source, f"dataset spec {source!r} does not exist (expected a YAML file with the keys of data.train)")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of dataset spec keys (path, split, question_field, ...), "
                          f"got {type(data).__name__}")
    spec = dataset_spec(data, source)
    if not spec.path:
        raise ConfigError(f"{source}: 'path' is missing: a local .jsonl / .json / .parquet file or a hub dataset id")
    return spec


def dataset_spec(data: dict[str, Any], where: str) -> DatasetSpec:
    """A DatasetSpec from a mapping of its keys; unknown keys and wrong types fail naming ``where``."""
    spec = DatasetSpec()
    _apply(spec, data, "", where)
    return spec


@dataclass
class BenchmarkEvalConfig:
    benchmarks: str = _f("", "Comma-separated benchmark names from the registry (`critique-rl data list`: gsm8k, gsm8k_train, math500, aime24, amc23, minerva_math, olympiadbench), e.g. 'math500,aime24'; task math evaluates on them during training, `critique-rl eval` by default.")
    data_root: str = _f("", "Folder of pulled benchmark copies (`critique-rl data pull NAME`), each at the file the registry names; a benchmark not there is loaded from the hub. Empty: $CRITIQUE_RL_DATA, else ~/.cache/critique-rl/data.")
    limit: int = _f(0, "Evaluate the first this many problems of each benchmark (0: all); for quick checks.", ge=0)
    greedy: bool = _f(True, "`critique-rl eval`: greedy pass@1, one greedy completion per problem.")
    num_samples: int = _f(16, "`critique-rl eval`: N sampled completions per problem for mean@N and pass@k (0: none); N >= 16 for AIME-sized sets.", ge=0)
    temperature: float = _f(0.6, "`critique-rl eval`: sampling temperature of the N samples.", gt=0)
    top_p: float = _f(0.95, "`critique-rl eval`: nucleus threshold of the N samples.", gt=0, le=1)
    max_new_tokens: int = _f(0, "`critique-rl eval`: longest completion; 0: rollout.max_completion_length.", ge=0)


@dataclass
class MathRewardConfig:
    timeout_s: float = _f(10.0, "Seconds one (gold, completion) verification may take; past it the item scores 0.0 and is counted.", gt=0)
    workers: int = _f(2, "Verifier processes: items of a call are verified in parallel across them.", ge=1)
    worker_memory_mb: int = _f(4096, "Address-space limit of each verifier process (0: none), so a huge power fails instead of filling memory.", ge=0)
    startup_timeout_s: float = _f(120.0, "Seconds a verifier process may take to import math-verify and sympy.", gt=0)
    verifier: str = _f("critique_rl.math_verify_worker:verify_answer",
                       "'module:function' (gold: str, prediction: str) -> bool run in the workers; a hook for other graders and tests. One with an `extraction` parameter gets `extraction`.")
    extraction: Literal["anchored", "boxed", "any"] = _f(
        "anchored", "Where the answer is read: 'anchored' pays only a stated answer, the last \\boxed{} or one after an explicit anchor ('the answer is', 'Answer:', 'final answer ... is', GSM8K's final '#### 42'); 'boxed' the last \\boxed{} only; 'any' also a bare number or expression anywhere (garbage that merely contains the gold scores 1; a reward a policy can learn to exploit).")
    step_budget_s: float = _f(120.0, "Seconds one reward call may spend verifying (a step's samples, its refinements, one evaluation pass): each item's timeout is cut to what is left, and items not started when it is spent score 0.0 unverified (verifier/budget_skipped), so pathological answers cost about this much instead of timeout_s each. 0: no budget.", ge=0)


@dataclass
class PromptsConfig:
    solve: str = _f("arithmetic/solve.jinja", "Template of the solve prompt (variables: question). A path, or a name under the packaged prompts/.")
    refine: str = _f("arithmetic/refine.jinja", "Template of the refine prompt (variables: question, attempt, critique).")
    chat_template: Literal["auto", "on", "off"] = _f("auto", "Wrap rendered prompts as one user message in the tokenizer's chat template: 'auto' when the tokenizer has one, 'on' (error if it has none), 'off' (raw text, base models).")
    system: str = _f("", "Template of a system message put before the user message when the chat template is used (variables: none); empty: none.")


@dataclass
class ModelConfig:
    name_or_path: str = _f("", "Policy: a local directory or hub id loadable by AutoModelForCausalLM. Empty: the warm-start model of the run.")
    torch_dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "Parameter dtype of the policy.")
    trust_remote_code: bool = _f(False, "Allow model code from the checkpoint (off: only transformers' own architectures).")
    device: str = _f("auto", "Torch device: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1' ...; with several processes (accelerate, torchrun) each takes its own.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass (memory for time; long responses on GPUs).")
    attn_implementation: str = _f("", "transformers attention kernel, e.g. 'sdpa', 'flash_attention_2'; empty: transformers' default.")
    lora_r: int = _f(0, "LoRA rank via peft (0: full fine-tuning).", ge=0)
    lora_alpha: float = _f(16.0, "LoRA scaling alpha.", gt=0)
    lora_dropout: float = _f(0.0, "LoRA dropout.", ge=0, lt=1)
    lora_target_modules: str = _f("all-linear", "peft target_modules: 'all-linear' or a comma-separated list of module names.")


@dataclass
class WarmStartConfig:
    steps: int = _f(900, "Supervised steps training the tiny model from scratch.", ge=1)
    batch_size: int = _f(64, "Sequences per supervised step.", ge=1)
    learning_rate: float = _f(1e-3, "Peak AdamW learning rate (linear warmup, cosine decay to 10%).", gt=0)
    warmup_steps: int = _f(50, "Linear warmup steps.", ge=0)
    max_tokens_per_microbatch: int = _f(4096, "Token budget (padded) of one forward/backward; sequences are grouped by length.", ge=1)
    refine_fraction: float = _f(0.35, "Share of refinement transcripts (question, wrong attempt, critique -> correction) in the warm-start mix.", ge=0, le=1)
    hard_refine_fraction: float = _f(0.5, "Share of hard problems among refinement transcripts; solve transcripts are always easy.", ge=0, le=1)
    result_noise: float = _f(0.0, "Chance that each digit of an addition result in a solve transcript is replaced by another digit (the slip carries into the next step, as a model's own would). Noisy demonstrations leave the warm-started policy unsure of its arithmetic: the entropy preset's recipe for a policy whose entropy GRPO can collapse. 0: clean data (the plateau demo).", ge=0, le=1)
    hidden_size: int = _f(128, "Tiny Qwen2 hidden size.", ge=1)
    num_layers: int = _f(4, "Tiny Qwen2 decoder layers.", ge=1)
    num_heads: int = _f(4, "Tiny Qwen2 attention heads.", ge=1)
    intermediate_size: int = _f(512, "Tiny Qwen2 MLP width.", ge=1)
    max_position_embeddings: int = _f(256, "Tiny Qwen2 context length (characters).", ge=1)
    misconception_fraction: float = _f(0.0, "Share of solve transcripts that are hard problems solved with a systematic misconception: every result of hard_threshold or more written without its leading digit (47+38+29: 47+38=85; 85+29=14; answer 14), the slip task.wrong_attempt makes now and then, made always. The warm-started policy then fails hard problems persistently (pass@k ~ 0 at any k, so GRPO has nothing to reinforce) and still uses critiques (its refinement transcripts): the plateau preset. 0: solve transcripts are easy problems only, and no random draw for this (the warm start is the same as without the field).", ge=0, le=1)
    critique_fraction: float = _f(0.0, "Share of critique transcripts in the warm-start mix (self-critique, multi-task): the critic prompt (critic.prompt_template, rendered as critic.backend sees it) of a correct, wrong or flawed attempt -> the rule critic's chain-of-thought critique, drawn as for the critic model (critic_model.correct_fraction, flawed_fraction, hard_fraction), so the policy learns to critique for critic.backend self. Critic prompts are ~330-420 characters: max_position_embeddings must hold them (preset self-critic: 512). 0: none, and no random draw for them (the warm start is the same as without the field).", ge=0, le=1)


@dataclass
class CriticModelConfig:
    steps: int = _f(1000, "Supervised steps training the tiny critic model from scratch (`critique-rl warmstart-critic`; the pipeline with critic.backend hf and an empty critic.model).", ge=1)
    batch_size: int = _f(64, "Sequences per supervised step (critique and solve transcripts, solve_fraction).", ge=1)
    learning_rate: float = _f(3e-3, "Peak AdamW learning rate (linear warmup, cosine decay to 10%).", gt=0)
    warmup_steps: int = _f(30, "Linear warmup steps.", ge=0)
    max_tokens_per_microbatch: int = _f(8192, "Token budget (padded) of one forward/backward.", ge=1)
    hard_fraction: float = _f(0.5, "Share of hard problems among the critiqued problems (the rest easy).", ge=0, le=1)
    correct_fraction: float = _f(0.2, "Share of attempts that are the reference solution (critique: every step ok, verdict correct).", ge=0, le=1)
    flawed_fraction: float = _f(0.3, "Share of deliberately flawed attempts, for robustness to inputs unlike wrong_attempt's: an operand copied wrong, a truncated attempt, the operands in another order, random digit slips; the rest (1 - correct_fraction - flawed_fraction) are wrong_attempt's (one addition goes wrong, the error propagates).", ge=0, le=1)
    solve_fraction: float = _f(0.75, "Share of solve transcripts (question -> reference solution, easy and hard problems) among the critic model's sequences, the rest critique transcripts: a critic checks additions, and these short sequences (~45 tokens against ~480) teach copying and addition cheaply: without them 600 steps did not learn to copy the attempt's operands into a critique.", ge=0, le=1)
    prompt_loss_weight: float = _f(1.0, "Weight of each prompt token's loss beside a critique token's (0: critiques only). The prompts hold what a critic must read and check (the question's operands copied into the attempt, their additions, the reference answer as their sum), and their tokens cost no extra forward pass.", ge=0)
    chat_fraction: float = _f(0.5, "Share of prompts wrapped in the critic's chat template (ChatML, saved with the model), the rest raw: the same model serves critic.api chat and completions.", ge=0, le=1)
    hidden_size: int = _f(96, "Critic Qwen2 hidden size.", ge=1)
    num_layers: int = _f(3, "Critic Qwen2 decoder layers.", ge=1)
    num_heads: int = _f(4, "Critic Qwen2 attention heads.", ge=1)
    intermediate_size: int = _f(384, "Critic Qwen2 MLP width.", ge=1)
    max_position_embeddings: int = _f(512, "Critic Qwen2 context length (characters): a critic prompt (~330-420, plus ~50 for the chat template) and its critique (critic.max_tokens).", ge=1)
    eval_problems: int = _f(100, "Quality check after training (`critique-rl critic-quality`): this many held-out easy and as many hard problems, each critiqued as a wrong_attempt and as its correct solution (0: no check).", ge=0)


@dataclass
class RolloutConfig:
    engine: Literal["hf", "server", "vllm"] = _f("hf", "Generation engine: 'hf' (transformers generate, batched, in the trainer), 'server' (any OpenAI-compatible /v1/completions endpoint: vllm serve, transformers serve), 'vllm' (vLLM colocated in the trainer process; needs a CUDA GPU and the vllm extra).")
    num_generations: int = _f(7, "Initial samples per prompt (the GRPO group size before refinements).", ge=1)
    temperature: float = _f(1.0, "Sampling temperature for initial samples and refinements.", gt=0)
    top_p: float = _f(1.0, "Nucleus sampling threshold.", gt=0, le=1)
    max_completion_length: int = _f(48, "Maximum new tokens per completion.", ge=1)
    return_logprobs: bool = _f(False, "hf: keep the sampler's log-prob of every token (a (batch, vocabulary) tensor per generated token until the batch ends) for rollout/logp_mismatch and loss.tis_cap; server and vllm engines return them whenever the endpoint does.")
    generation_batch_size: int = _f(256, "hf: most sequences (prompt x sample rows) per generate call; rollout.max_tokens_per_generate bounds their tokens too.", ge=1)
    max_tokens_per_generate: int = _f(65536, "hf: token budget of one generate call, rows x (longest prompt + max new tokens), prompts grouped by length; bounds memory (the KV cache is this many tokens). The default keeps a 256-row call of the tiny model's 256 positions, and is about 3.7 GB of KV cache for a 7B model in bfloat16.", ge=1)
    long_prompt: Literal["truncate_left", "skip"] = _f("truncate_left", "Prompts longer than the context leaves them (the model's max_position_embeddings, or vllm_max_model_len, minus the max new tokens): 'truncate_left' keeps their last tokens (the question's end and the answer cue), 'skip' generates nothing (an empty completion marked truncated, which the verifier scores 0). Counted in rollout/prompts_truncated or rollout/prompts_skipped; the first ones are reported in one warning.")
    server_base_url: str = _f("", "server: base URL of the endpoint, e.g. http://127.0.0.1:8000/v1 (required with engine server).")
    server_model: str = _f("", "server: the model name sent in requests; empty: the policy's path (weight_sync reload: the latest synced directory).")
    server_api_key_env: str = _f("", "server: NAME of the environment variable holding the endpoint's API key; empty: no key.")
    server_dialect: Literal["auto", "vllm", "transformers", "openai"] = _f("auto", "server: request extras the endpoint accepts: 'vllm' (exact token ids via return_tokens_as_token_ids, prompt as ids, top_k), 'transformers' (transformers serve: a generation_config with do_sample), 'openai' (standard fields only); 'auto' probes once, in that order.")
    server_timeout_s: float = _f(600.0, "server: timeout of one HTTP request, seconds.", gt=0)
    server_max_retries: int = _f(3, "server: retries of a request after 408, 429, 5xx, timeouts and dropped connections (exponential backoff).", ge=0)
    server_max_concurrency: int = _f(64, "server: requests in flight at once (one per prompt when the endpoint honours n, else one per sample).", ge=1)
    weight_sync: Literal["none", "reload", "http"] = _f("reload", "server: how the endpoint gets the trained weights after each optimizer step: 'none' (it keeps its model), 'reload' (save to <run_dir>/rollout_weights/step-N and name that directory as the model of later requests; transformers serve loads it on demand), 'http' (save, then POST {\"path\", \"step\"} to weight_sync_url).")
    weight_sync_url: str = _f("", "server, weight_sync http: the URL that reloads the endpoint's weights from the posted directory.")
    weight_sync_keep: int = _f(2, "server, weight_sync reload/http: synced weight directories kept on disk (older ones are deleted).", ge=1)
    vllm_gpu_memory_utilization: float = _f(0.3, "vllm: fraction of GPU memory vLLM may take (weights + KV cache); the rest is left to training.", gt=0, le=1)
    vllm_tensor_parallel_size: int = _f(1, "vllm: GPUs one vLLM engine shards the model over.", ge=1)
    vllm_enable_sleep_mode: bool = _f(False, "vllm: offload vLLM's weights and free its KV cache between generations, so training gets the memory back (slower).")
    vllm_dtype: str = _f("auto", "vllm: dtype of vLLM's copy of the weights ('auto': the checkpoint's, 'bfloat16', 'float16', 'float32').")
    vllm_max_model_len: int = _f(0, "vllm: longest prompt + completion in tokens (bounds the KV cache); 0: the model's maximum.", ge=0)
    vllm_enforce_eager: bool = _f(False, "vllm: no CUDA graphs (faster start-up, slower decoding).")
    vllm_seed: int = _f(0, "vllm: seed of vLLM's sampler.", ge=0)


@dataclass
class CriticConfig:
    backend: Literal["rule", "openai", "hf", "self"] = _f("rule", "Who writes critiques: 'rule' (the synthetic task's reference critic), 'openai' (any OpenAI-compatible endpoint), 'hf' (a local transformers model), 'self' (the policy with its current weights).")
    critique_type: Literal["cot", "indicative", "ground_truth"] = _f("cot", "'cot' chain-of-thought critique; 'indicative' correct/incorrect; 'ground_truth' + the reference answer. Model backends write only 'cot'; the others are rendered from their templates.")
    template: str = _f("", "Critique template of critiques rendered without a model (rule: every kind; other backends: indicative, ground_truth); empty: prompts/<task>/critique_<critique_type>.jinja.")
    prompt_template: str = _f("", "Model backends: template of the critic prompt (variables: question, attempt, reference; reference is none when withheld); empty: prompts/<task>/critic_prompt_cot.jinja.")
    system_template: str = _f("", "Model backends: template of the system message (same variables; completions API: prepended to the prompt); empty: none.")
    model: str = _f("", "openai: the model name the endpoint serves; hf: a local directory or hub id.")
    base_url: str = _f("", "openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1; empty: the client default (OPENAI_BASE_URL or api.openai.com).")
    api_key_env: str = _f("OPENAI_API_KEY", "openai: NAME of the environment variable holding the API key (the key never goes in a config); empty: the endpoint needs no key.")
    api: Literal["chat", "completions"] = _f("chat", "Model backends: 'chat' (messages; hf/self apply the tokenizer's chat template) or 'completions' (the rendered prompt as raw text).")
    temperature: float = _f(0.7, "Model backends: sampling temperature of critiques (0: greedy).", ge=0)
    top_p: float = _f(1.0, "Model backends: nucleus sampling threshold.", gt=0, le=1)
    max_tokens: int = _f(1024, "Model backends: maximum tokens of one critique.", ge=1)
    timeout_s: float = _f(60.0, "openai: timeout of one HTTP request, seconds.", gt=0)
    deadline_s: float = _f(300.0, "openai: total time one critique may take, retries and backoff included (waiting for the per-minute budgets is not); then the fallback is used.", gt=0)
    max_retries: int = _f(5, "openai: retries of a request after 429, 5xx, timeouts and connection errors (exponential backoff with jitter, Retry-After honoured).", ge=0)
    backoff_s: float = _f(1.0, "openai: first retry wait, seconds; doubles per retry, plus a random jitter of up to backoff_s.", ge=0)
    backoff_max_s: float = _f(60.0, "openai: longest wait between retries, seconds.", ge=0)
    circuit_failures: int = _f(10, "openai: circuit breaker: after this many requests in a row fail to reach the endpoint (refused, DNS, timeouts, dropped connections, 5xx), critiques fall back at once, without requests or retries (reason circuit_open, counted in critic/circuit_open); 0: off.", ge=0)
    circuit_cooldown_s: float = _f(30.0, "openai: seconds the open circuit breaker refuses requests; then one probe request goes out, whose answer closes it and whose failure opens it again.", ge=0)
    max_concurrency: int = _f(32, "Critiques in flight at once (openai: concurrent requests; hf, self: prompts per generate call).", ge=1)
    requests_per_minute: float = _f(0.0, "openai: request budget per minute (0: unlimited).", ge=0)
    tokens_per_minute: float = _f(0.0, "openai: token budget per minute, prompt (estimated at 4 characters a token) plus max_tokens, corrected by the reported usage (0: unlimited).", ge=0)
    max_verdict_retries: int = _f(2, "Model backends: regenerations of a critique whose verdict disagrees with the verifier; then the fallback is used.", ge=0)
    fallback: Literal["ground_truth", "indicative"] = _f("ground_truth", "Model backends: critique kind rendered when no usable critique is had; counted in critic/fallbacks.")
    overlap: bool = _f(True, "rule, openai: write a step's critiques in a background thread while the trainer scores the initial samples' old and reference log-probs (needed when num_iterations, mini_batches or beta make the update off-policy); hf and self share the GPU with the trainer and never overlap.")
    reference: Literal["answer", "solution"] = _f("answer", "What the critic is shown as the reference: 'answer' (the final answer; the paper) or 'solution' (the task's worked solution when it has one, e.g. the data's solution field; the official code shows an R1 trace).")
    fallback_template: str = _f("", "Template of fallback critiques (variables: question, attempt, reference, verdict); empty: prompts/<task>/critique_<fallback>.jinja.")
    alarm_fallback_share: float = _f(0.5, "Alarm critic_fallbacks when more than this share of each step's critiques (critic/fallbacks / refine/critiques) fell back for alarm_fallback_patience steps in a row.", ge=0, lt=1)
    alarm_fallback_patience: int = _f(5, "Steps in a row above alarm_fallback_share before the critic_fallbacks alarm fires; a step without critiques leaves the count as it is.", ge=1)
    alarm_fallback_stop: bool = _f(False, "Stop the run when the critic_fallbacks alarm fires, as a SIGINT does: checkpoint, resume hint, exit code 5.")
    cache: bool = _f(True, "openai, hf: cache critiques on disk keyed by backend, model, rendered prompt and sampling parameters; off: no cache (self never caches: its weights change).")
    cache_dir: str = _f("", "Directory of the critique cache (critic_cache.sqlite); empty: the run directory.")
    self_reference: bool = _f(True, "self: show the policy the reference answer when it critiques (false: the critic prompt has none; pick fallback: indicative to keep it out of fallback critiques too).")
    device: str = _f("auto", "hf: torch device of the critic model ('auto', 'cpu', 'cuda', 'cuda:1' ...).")
    torch_dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "hf: parameter dtype of the critic model.")
    noise: float = _f(0.0, "rule critic, cot critiques: the share of critiques that name a wrong step or a wrong value (a deliberately flawed critic, to measure how critic quality moves the result); drawn per request from (seed, question, attempt), so reproducible and resume-safe; counted in critic/noised, marked noised in the critique's provenance.", ge=0, le=1)
    noise_verdict: Literal["keep", "flip"] = _f("keep", "rule critic with noise: 'keep' the true verdict in noised critiques; 'flip': invert it too.")


@dataclass
class RefineConfig:
    refinements_per_group: int = _f(1, "At most this many refinements join each triggered group.", ge=1)
    refine_trigger: Literal["all_fail", "any_fail", "always"] = _f("all_fail", "Which groups are critiqued: 'all_fail' (paper: no correct sample), 'any_fail', 'always' (official code: every response).")
    max_critiques_per_group: int = _f(0, "Critique (and refine) at most this many attempts of a triggered group; 0: every failed attempt (paper). 2 cuts refinement cost ~3x at the same refinements per group.", ge=0)
    max_prompt_tokens: int = _f(0, "Refine prompts longer than this many tokens are not generated (counted in refine/too_long); 0: no limit (the official code never truncates them and can exceed the model's length).", ge=0)
    refinement_fallback: Literal["random", "first", "none"] = _f("random", "When no refinement of a group is correct: add a random one, the first one, or none.")
    mode: Literal["sync", "async"] = _f("sync", "'sync': triggered groups are critiqued and refined inside the step (the paper). 'async': they leave the step (their advantages are all zero there), a background process critiques and refines them with the weights that sampled them, and they join a later update as complete mixed groups (README: Critique off the critical path). Single process, hf engine.")
    max_lag: int = _f(1, "refine.mode async: a group sampled at step s joins an update of steps s+1 .. s+max_lag; later it is dropped (counted in refine/dropped_late).", ge=1)
    late: Literal["wait", "drop"] = _f("wait", "refine.mode async, a group not back by step s+max_lag: 'wait' for it (time/refine_wait; with max_lag 1 a run is exactly reproducible and resumable) or 'drop' it and never wait.")
    async_threads: int = _f(1, "refine.mode async: torch threads of the background refiner process.", ge=1)


@dataclass
class LossConfig:
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = _f("dr_grpo", "'grpo' per-sequence mean; 'dapo' token mean over the batch; 'dr_grpo' sum / (sequences * max_completion_length).")
    scale_rewards: Literal["none", "group"] = _f("none", "Advantage = reward - group mean, divided by the group std if 'group'.")
    std_unbiased: bool = _f(False, "With scale_rewards 'group': divide by the unbiased std (n - 1, as TRL and the official code) instead of the population std (n; default, kept so earlier runs reproduce). A group of one gets advantage 0 either way.")
    epsilon: float = _f(0.2, "Lower PPO clip range of the importance ratio (initial samples).", ge=0, le=1)
    epsilon_high: float = _f(0.2, "Upper PPO clip range (DAPO clip-higher: 0.28).", ge=0)
    clip: bool = _f(True, "PPO clipping on initial samples (the official code has none).")
    gamma: float = _f(0.1, "Policy shaping f(p) = p / (p + gamma) on refinement tokens.", gt=0)
    entropy_coef: float = _f(0.0, "Entropy bonus coefficient (the official code uses 0.001).", ge=0)
    entropy_agg: Literal["loss_type", "token_mean"] = _f("loss_type", "How the entropy bonus is averaged: 'loss_type' like the policy loss (default, kept so earlier runs reproduce); 'token_mean' sum of H over the batch's valid tokens / their number (the official code and TRL).")
    refinement_weight: Literal["equal", "paper"] = _f("equal", "'equal': every token weighs alike (the official code; default, kept so earlier runs reproduce); 'paper': refinement token losses are multiplied by (initial sequences / refinement sequences) of the optimizer batch, so the refinement part is normalised by its own count as in the paper's J_init + J_refi.")
    beta: float = _f(0.0, "k3 KL penalty to the frozen initial policy (0: no KL, no reference model kept).", ge=0)
    intervention: Literal["none", "clip_cov", "kl_cov", "gppo", "top_entropy_quantile"] = _f("none", "Entropy-collapse remedy applied to initial-sample tokens.")
    clip_cov_ratio: float = _f(2e-4, "Clip-Cov: fraction of tokens whose gradient is detached.", ge=0, le=1)
    clip_cov_lb: float = _f(1.0, "Clip-Cov: lower covariance bound of candidate tokens.", ge=0)
    clip_cov_ub: float = _f(5.0, "Clip-Cov: upper covariance bound of candidate tokens.", ge=0)
    kl_cov_ratio: float = _f(2e-3, "KL-Cov: fraction (not percent) of tokens, by covariance, that get the KL penalty.", ge=0, le=1)
    kl_cov_coef: float = _f(1.0, "KL-Cov: penalty coefficient.", ge=0)
    gppo_dual_clip: float = _f(10.0, "GPPO: dual-clip constant c for negative advantages.", gt=1)
    tis_cap: float = _f(0.0, "Truncated importance sampling: initial-sample tokens are weighted by min(pi_old / pi_rollout, tis_cap), correcting the mismatch between the trainer's and the rollout engine's log-probs (needs the engine's sampling log-probs); 0: off.", ge=0)
    top_entropy_quantile: float = _f(0.2, "Top-entropy updates: share of highest-entropy tokens that carry gradient.", gt=0, le=1)


@dataclass
class TrainConfig:
    steps: int = _f(150, "RL steps (one rollout batch each).", ge=1)
    prompts_per_step: int = _f(16, "Prompts per rollout batch.", ge=1)
    learning_rate: float = _f(5e-5, "AdamW learning rate (constant after warmup).", gt=0)
    warmup_steps: int = _f(10, "Linear learning-rate warmup steps; Adam's first steps move every weight by ~lr, which a sharp policy does not survive.", ge=0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.", gt=0)
    num_iterations: int = _f(1, "Passes over each rollout batch (old log-probs computed once per batch).", ge=1)
    mini_batches: int = _f(1, "Optimizer steps per pass: the batch is split into this many mini-batches of whole groups.", ge=1)
    max_tokens_per_microbatch: int = _f(16384, "Token budget (padded) of one forward/backward; bounds memory whatever the lengths.", ge=1)
    save_every: int = _f(50, "Checkpoint every this many steps (and at the end).", ge=1)
    keep_last: int = _f(2, "Checkpoints kept; older ones are pruned.", ge=1)
    max_bad_steps: int = _f(3, "Stop the run after this many optimizer steps in a row skipped for a NaN or inf loss or gradient.", ge=1)
    alarm_truncation_ratio: float = _f(0.5, "Alarm when more than this share of completions hit max_completion_length.", ge=0, le=1)
    alarm_zero_std_patience: int = _f(20, "Alarm when every group had zero reward variance for this many steps in a row.", ge=1)
    entropy_min: float = _f(0.0, "Alarm when token entropy falls below this (collapse); 0: off.", ge=0)
    entropy_max: float = _f(0.0, "Alarm when token entropy rises above this (explosion, e.g. refinements trained off-policy); 0: off.", ge=0)
    samples_per_step: int = _f(2, "Groups per step written to samples.jsonl (question, attempts, critiques, refinements).", ge=0)


@dataclass
class EvalConfig:
    every: int = _f(25, "Evaluate greedy pass@1 on the held-out splits every this many RL steps (0: only at the end).", ge=0)
    pass_n: int = _f(8, "Samples per problem for sampled pass@k at the end.", ge=1)
    pass_k: int = _f(4, "k of the unbiased pass@k estimator 1 - C(n-c,k)/C(n,k).", ge=1)
    temperature: float = _f(1.0, "Sampling temperature for pass@k.", gt=0)
    probe_prompts: int = _f(32, "Held-out prompts (half hard, half easy; fixed by the seed) whose greedy completions' mean token entropy is logged as entropy/probe at every evaluation, comparable across runs (0: off).", ge=0)


REPORT_TO = ("jsonl", "tensorboard", "wandb", "mlflow")


@dataclass
class LogConfig:
    report_to: str = _f("jsonl", "Comma-separated metric backends among jsonl, tensorboard, wandb, mlflow, e.g. 'tensorboard,wandb'. "
                                 "metrics.jsonl and samples.jsonl are written in the run directory whatever the list; the others "
                                 "need their extra: pip install 'critique-rl[tensorboard]' (or [wandb], [mlflow]).")
    project: str = _f("critique-rl", "wandb project; mlflow experiment name.")
    run_name: str = _f("", "Run name shown by wandb and mlflow; empty: the run directory's name.")
    wandb_mode: Literal["offline", "online"] = _f("offline", "wandb: 'offline' writes the run under <run dir>/wandb/ with no network (upload later with `wandb sync`); 'online' streams it (needs WANDB_API_KEY or `wandb login`).")
    wandb_entity: str = _f("", "wandb: team or user the run belongs to; empty: the account's default.")
    mlflow_tracking_uri: str = _f("", "mlflow: tracking URI (http://host:5000, sqlite:///path/mlflow.db, ...); empty: a SQLite store at <run dir>/mlflow/mlflow.db, artifacts beside it.")

    def backends(self) -> list[str]:
        """The requested backends, in order, without duplicates; jsonl first and always there."""
        names = [n.strip().lower() for n in self.report_to.split(",") if n.strip()]
        return list(dict.fromkeys(["jsonl", *names]))


@dataclass
class PipelineConfig:
    equal_compute: bool = _f(True, "Also run GRPO for the wall-clock time Critique-GRPO took (more steps).")


@dataclass
class Config:
    method: Literal["grpo", "critique_grpo"] = _f("critique_grpo", "'grpo': refinement off; 'critique_grpo': critique failures, refine, mix refinements into groups.")
    seed: int = _f(0, "Seed of data, sampling and initialisation.", ge=0)
    task: TaskConfig = field(default_factory=TaskConfig, metadata={"help": "The task: the synthetic reasoning task or real math."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Real training data (task.name = math)."})
    verifier: MathRewardConfig = field(default_factory=MathRewardConfig, metadata={"help": "The math-verify reward (task.name = math)."})
    benchmarks: BenchmarkEvalConfig = field(default_factory=BenchmarkEvalConfig, metadata={"help": "Benchmark files for evaluation (task.name = math, `critique-rl eval`)."})
    prompts: PromptsConfig = field(default_factory=PromptsConfig, metadata={"help": "Jinja templates of the policy's prompts."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The policy model."})
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig, metadata={"help": "Supervised warm start of the tiny model."})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling of completions and refinements."})
    critic: CriticConfig = field(default_factory=CriticConfig, metadata={"help": "The critic of failed attempts."})
    critic_model: CriticModelConfig = field(default_factory=CriticModelConfig, metadata={"help": "The tiny critic model trained from scratch for critic.backend hf on the synthetic task."})
    refine: RefineConfig = field(default_factory=RefineConfig, metadata={"help": "Which groups get refinements and which refinements join."})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "Advantages, policy loss and entropy interventions."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "The RL optimisation loop."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Held-out evaluation."})
    log: LogConfig = field(default_factory=LogConfig, metadata={"help": "Where metrics go: metrics.jsonl always, plus TensorBoard, W&B, MLflow."})
    pipeline: PipelineConfig = field(default_factory=PipelineConfig, metadata={"help": "The end-to-end pipeline."})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS_PACKAGE = "critique_rl.presets"


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(PRESETS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> tuple[dict[str, Any], str]:
    """Read a preset name or a YAML path; return its mapping and a name for messages."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {source!r} does not exist (presets: {', '.join(preset_names())})")
        text, where = path.read_text(), str(path)
    else:
        res = resources.files(PRESETS_PACKAGE) / f"{source}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown preset {source!r}; presets: {', '.join(preset_names())}, or a path to a .yaml file")
        text, where = res.read_text(), f"preset {source}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: malformed YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config sections, got {type(data).__name__}")
    return data, where


def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(f"{where}: {key} = {value!r}; expected one of {', '.join(map(repr, choices))}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} = {value!r}; expected true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} = {value!r}; expected an integer")
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads 2e-4 (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {key} = {value!r}; expected a finite number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} = {value!r}; expected a string")
        return value
    raise TypeError(f"config field {key} has an unsupported annotation {annotation!r}")


def value_range(metadata: Any) -> str:
    """A field's declared range in words ('' when it has none).

    >>> value_range({"ge": 1}), value_range({"gt": 0, "le": 1}), value_range({"ge": 0, "lt": 1})
    ('>= 1', 'in (0, 1]', 'in [0, 1)')
    """
    low = next((k for k in ("ge", "gt") if k in metadata), None)
    high = next((k for k in ("le", "lt") if k in metadata), None)
    if low and high:
        return f"in {'[' if low == 'ge' else '('}{metadata[low]}, {metadata[high]}{']' if high == 'le' else ')'}"
    bound = low or high
    return f"{BOUNDS[bound][0]} {metadata[bound]}" if bound else ""


def _check_range(value: Any, metadata: Any, key: str, where: str) -> None:
    if any(name in metadata and not ok(value, metadata[name]) for name, (_, ok) in BOUNDS.items()):
        raise ConfigError(f"{where}: {key} = {value!r}; expected {value_range(metadata)}")


def _apply(obj: Any, data: dict[str, Any], prefix: str, where: str) -> None:
    """Set ``data``'s keys on ``obj`` (recursing into sections), each checked for name, type and range."""
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    names = list(fields)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (valid: {', '.join(names)})"
            raise ConfigError(f"{where}: unknown key {dotted!r}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {dotted} must be a mapping of its fields, got {value!r}")
            _apply(current, value, f"{dotted}.", where)
        else:
            value = _coerce(value, hints[key], dotted, where)
            _check_range(value, fields[key].metadata, dotted, where)
            setattr(obj, key, value)


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value, e.g. train.steps=10")
    path, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    parts = path.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def validate(cfg: Config) -> None:
    """Cross-field checks that types and the ranges of single fields cannot express."""
    problems = []
    if cfg.rollout.num_generations < 2 and cfg.method == "grpo":
        problems.append("rollout.num_generations must be >= 2 for GRPO (a group of one has zero advantage)")
    if cfg.eval.pass_k > cfg.eval.pass_n:
        problems.append(f"eval.pass_k ({cfg.eval.pass_k}) must be <= eval.pass_n ({cfg.eval.pass_n})")
    r = cfg.rollout
    if r.engine == "server" and not r.server_base_url:
        problems.append("rollout.engine server needs rollout.server_base_url, e.g. http://127.0.0.1:8000/v1")
    if r.engine == "server" and r.weight_sync == "http" and not r.weight_sync_url:
        problems.append("rollout.weight_sync http needs rollout.weight_sync_url (the endpoint that reloads the weights)")
    if cfg.train.prompts_per_step % cfg.train.mini_batches:
        problems.append(f"train.prompts_per_step ({cfg.train.prompts_per_step}) must be divisible by train.mini_batches ({cfg.train.mini_batches})")
    if cfg.task.max_operand < cfg.task.min_operand:
        problems.append(f"task.max_operand ({cfg.task.max_operand}) must be >= task.min_operand ({cfg.task.min_operand})")
    if cfg.critic_model.correct_fraction + cfg.critic_model.flawed_fraction > 1:
        problems.append(f"critic_model.correct_fraction ({cfg.critic_model.correct_fraction}) + critic_model.flawed_fraction "
                        f"({cfg.critic_model.flawed_fraction}) must be <= 1")
    if cfg.loss.clip_cov_ub < cfg.loss.clip_cov_lb:
        problems.append(f"loss.clip_cov_ub ({cfg.loss.clip_cov_ub}) must be >= loss.clip_cov_lb ({cfg.loss.clip_cov_lb})")
    if cfg.critic.noise > 0 and (cfg.critic.backend != "rule" or cfg.critic.critique_type != "cot"):
        problems.append(f"critic.noise ({cfg.critic.noise}) noises chain-of-thought critiques of the rule critic only; "
                        f"it needs critic.backend rule and critic.critique_type cot")
    if cfg.task.name == "math" and cfg.critic.backend == "rule" and cfg.critic.critique_type == "cot" and not cfg.critic.template:
        problems.append("critic.backend rule writes chain-of-thought critiques only for the arithmetic task; for math use "
                        "critic.backend openai, hf or self, or critic.critique_type indicative or ground_truth")
    for name in cfg.log.backends():
        if name not in REPORT_TO:
            close = difflib.get_close_matches(name, REPORT_TO, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"log.report_to: unknown backend {name!r}{hint}; choose from {', '.join(REPORT_TO)}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def config_from_dict(data: dict[str, Any], where: str = "config") -> Config:
    cfg = Config()
    _apply(cfg, data, "", where)
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply dotted ``key=value`` overrides in order, then validate."""
    for item in overrides or []:
        _apply(cfg, _parse_override(item), "", f"override {item!r}")
    validate(cfg)
    return cfg


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config sections as dotted keys.

    >>> flatten({"method": "grpo", "train": {"steps": 150}})
    {'method': 'grpo', 'train.steps': 150}
    """
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, section by section.

    >>> _merge({"train": {"steps": 1, "lr": 2}}, {"train": {"steps": 5}})
    {'train': {'steps': 5, 'lr': 2}}
    """
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve(source: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """A preset or YAML file with its ``inherit:`` chain applied (the parent first, then this file)."""
    data, where = _read_yaml(source)
    parent = data.pop("inherit", None)
    if parent is None:
        return data, where
    if not isinstance(parent, str):
        raise ConfigError(f"{where}: inherit = {parent!r}; expected a preset name or a YAML path")
    if parent in seen:
        raise ConfigError(f"{where}: inherit cycle {' -> '.join((*seen, source, parent))}")
    base, _ = _resolve(parent, (*seen, source))
    return _merge(base, data), where


def load_config(source: str = "toy", overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML file (``inherit: PARENT`` takes a parent's values first), then apply
    dotted ``key=value`` overrides in order."""
    data, where = _resolve(source)
    return apply_overrides(config_from_dict(data, where), overrides)


def describe(cfg: Config) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, value, default, help) for every leaf field, for `config show` and docs."""
    rows = []

    def walk(obj: Any, default: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value, dflt = getattr(obj, f.name), getattr(default, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, dflt, f"{prefix}{f.name}.")
            else:
                rows.append((f"{prefix}{f.name}", value, dflt, f.metadata["help"]))

    walk(cfg, Config(), "")
    return rows
