"""An OpenAI-compatible ``/v1/completions`` endpoint generates the rollouts (``vllm serve``, ``transformers serve``).

The trainer renders prompts to text; the policy's tokenizer gives their ids (no special tokens
added, as the ``hf`` engine does). Requests go out concurrently from a thread pool, at most
``rollout.server_max_concurrency`` in flight, with retries on 408/429/5xx, timeouts and dropped
connections (exponential backoff, Retry-After honoured). Any other status fails at once, naming
the URL, the status and what the server said.

Dialects. Endpoints accept different extras, so the first generate call probes, unless
``rollout.server_dialect`` names one: ``vllm`` (prompt sent as token ids, ``top_k``,
``return_tokens_as_token_ids`` with ``logprobs``: the completion ids are exactly the sampled
tokens), ``transformers`` (``transformers serve``: a ``generation_config`` with ``do_sample``, as
its plain ``temperature`` does not turn sampling on), ``openai`` (standard fields only). The
probe (one request of one token, ``n=2``) also finds whether ``n`` is honoured
(``transformers serve`` ignores it: one request per sample then) and whether log-probs come back.

Token ids. Without exact ids from the server, the returned text is tokenized again with the
policy's tokenizer, and end-of-sequence is appended when ``finish_reason`` is ``stop``; such
completions are counted in ``rollout/ids_retokenized``, and those whose
``decode(encode(text))`` does not give the text back in ``rollout/ids_inexact`` (the
``ids_inexact`` attribute keeps the run's total).

Weight sync (``rollout.weight_sync``) after each optimizer step, and once before the first
generation (so a resumed run, or a policy built in memory, is served its own weights):

* ``none``: the endpoint keeps the model it has (``rollout.server_model``, else the policy's path).
* ``reload``: the policy (LoRA merged) and tokenizer are saved to
  ``<run_dir>/rollout_weights/step-N`` (``initial`` for the first), atomically, keeping
  ``rollout.weight_sync_keep`` directories; later requests name that directory as their
  ``model``. ``transformers serve`` started without a model argument loads it on demand; the
  engine then POSTs ``/reset`` so the server drops the previous step's model (it unloads every
  model it holds; the next request loads the new one). ``vllm serve`` serves one model fixed at
  launch and answers 404 for other names: use ``http`` with a reload endpoint of your own.
* ``http``: the same save, then POST ``{"path": dir, "step": N}`` (``step`` null for the first)
  to ``rollout.weight_sync_url``, which must answer 2xx once the endpoint serves those weights;
  requests keep ``rollout.server_model``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from critique_rl.api_keys import read_api_key
from critique_rl.config import ConfigError
from critique_rl.rollout.base import Completion, LongPrompts, SamplingParams, context_length, with_skipped
from critique_rl.rollout.weights import policy_path, save_policy

log = logging.getLogger(__name__)

DIALECTS = ("vllm", "transformers", "openai")
TOKEN_ID = re.compile(r"^token_id:(-?\d+)$")


class RolloutServerError(RuntimeError):
    """The rollout endpoint is unreachable, refused a request, or answered something unusable."""


class _Status(Exception):
    """A non-retried HTTP status, kept apart so the probe can try the next dialect."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


def _detail(response: httpx.Response) -> str:
    """What the server said about an error, cut short."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("detail") or body.get("error") or body.get("message") or body
        if isinstance(err, dict):
            err = err.get("message") or err
        return str(err)[:300]
    return str(body)[:300]


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    try:
        return max(float(response.headers["retry-after"]), 0.0)
    except (KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------- pure conversion
def request_body(dialect: str, model: str, prompt: str, prompt_ids: list[int], n: int, params: SamplingParams,
                 eos_token_id: int | None, pad_token_id: int | None, send_n: bool) -> dict:
    """The JSON body of one /completions request in ``dialect``.

    >>> b = request_body("vllm", "m", "1+1", [5, 6], 3, SamplingParams(8, 0.7), 1, 0, True)
    >>> b["prompt"], b["n"], b["temperature"], b["top_k"], b["return_tokens_as_token_ids"]
    ([5, 6], 3, 0.7, -1, True)
    >>> b = request_body("transformers", "m", "1+1", [5, 6], 3, SamplingParams(8, greedy=True), 1, 0, False)
    >>> "n" in b, json.loads(b["generation_config"])["do_sample"]
    (False, False)
    """
    temperature, top_p = (0.0, 1.0) if params.greedy else (params.temperature, params.top_p)
    body: dict = {"model": model, "prompt": prompt, "max_tokens": params.max_new_tokens}
    if send_n and n > 1:
        body["n"] = n
    if dialect == "vllm":
        # Exact ids in and out; top_k and the penalties explicitly neutral, so the model's
        # generation_config.json defaults (vLLM applies them to unset fields) cannot change the policy.
        body.update(prompt=list(prompt_ids), temperature=temperature, top_p=top_p, top_k=-1, min_p=0.0,
                    repetition_penalty=1.0, logprobs=1, return_tokens_as_token_ids=True)
    elif dialect == "transformers":
        gen = {"do_sample": not params.greedy, "max_new_tokens": params.max_new_tokens, "top_k": 0,
               "repetition_penalty": 1.0, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
        if not params.greedy:
            gen.update(temperature=temperature, top_p=top_p)
        body["generation_config"] = json.dumps(gen)
    else:
        body.update(temperature=temperature, top_p=top_p, logprobs=1)
    return body


def parse_choices(body, expected: int, url: str) -> list[dict]:
    """The ``choices`` of a /completions response in ``index`` order, checked for what is used."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise RolloutServerError(f"malformed response from {url}: no 'choices' list in {str(body)[:200]!r}")
    choices = body["choices"]
    for c in choices:
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            raise RolloutServerError(f"malformed response from {url}: a choice has no 'text' string: {str(c)[:200]!r}")
        if c.get("finish_reason") not in ("stop", "length"):
            raise RolloutServerError(f"malformed response from {url}: choice finish_reason is "
                                     f"{c.get('finish_reason')!r}, expected 'stop' or 'length'")
    if len(choices) != expected:
        raise RolloutServerError(f"malformed response from {url}: asked for {expected} choice(s), got {len(choices)}")
    return sorted(choices, key=lambda c: c.get("index", 0))


def exact_token_ids(logprobs) -> list[int] | None:
    """Token ids from vLLM's ``return_tokens_as_token_ids`` tokens ("token_id:123"), else None.

    >>> exact_token_ids({"tokens": ["token_id:5", "token_id:1"]}), exact_token_ids({"tokens": ["a"]})
    ([5, 1], None)
    """
    tokens = logprobs.get("tokens") if isinstance(logprobs, dict) else None
    if not isinstance(tokens, list):
        return None
    ids = []
    for t in tokens:
        m = TOKEN_ID.match(t) if isinstance(t, str) else None
        if m is None:
            return None
        ids.append(int(m.group(1)))
    return ids


def token_logprobs(logprobs) -> list[float] | None:
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(values, list) or any(not isinstance(v, (int, float)) for v in values):
        return None
    return [float(v) for v in values]


def completion_from_choice(choice: dict, prompt_ids: list[int], tokenizer) -> tuple[Completion, bool, bool]:
    """(Completion, ids were re-tokenized, the re-tokenization is not exact) of one checked choice."""
    text, finish = choice["text"], choice["finish_reason"]
    eos = tokenizer.eos_token_id
    logprobs = token_logprobs(choice.get("logprobs"))
    ids = exact_token_ids(choice.get("logprobs"))
    if ids is not None:
        stop_token = choice.get("stop_reason")
        ender = stop_token if isinstance(stop_token, int) else eos
        if finish == "stop" and ender is not None and (not ids or ids[-1] != ender) and not isinstance(stop_token, str):
            ids.append(ender)               # the server left out the token that ended the sequence
            logprobs = None
        if logprobs is not None and len(logprobs) != len(ids):
            logprobs = None
        return Completion(list(prompt_ids), ids, text, finish == "length", logprobs), False, False
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    inexact = tokenizer.decode(ids, skip_special_tokens=True) != text
    if finish == "stop" and eos is not None:
        ids.append(eos)
    if logprobs is not None and len(logprobs) != len(ids):
        logprobs = None
    return Completion(list(prompt_ids), ids, text, finish == "length", logprobs), True, inexact


# ---------------------------------------------------------------------------- the engine
class ServerEngine:
    def __init__(self, cfg, model, tokenizer, run_dir: Path, transport: httpx.BaseTransport | None = None):
        """``transport``: an httpx transport to use instead of the network (tests)."""
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.base_url = cfg.server_base_url.rstrip("/")
        self.weights_root = Path(run_dir) / "rollout_weights"
        key = read_api_key(cfg.server_api_key_env, "rollout.server_api_key_env", "the endpoint's key")
        self._client = httpx.Client(
            transport=transport, timeout=cfg.server_timeout_s, headers={"Authorization": f"Bearer {key}"} if key else {},
            limits=httpx.Limits(max_connections=cfg.server_max_concurrency, max_keepalive_connections=cfg.server_max_concurrency))
        self._pool = ThreadPoolExecutor(cfg.server_max_concurrency, thread_name_prefix="rollout-server")
        self.served_model = cfg.server_model or policy_path(model)
        if not self.served_model and cfg.weight_sync != "reload":
            raise ConfigError("rollout.server_model is empty and the policy has no path to name; set rollout.server_model "
                              "to the model name the endpoint serves")
        self.dialect: str | None = None if cfg.server_dialect == "auto" else cfg.server_dialect
        self.supports_n = False
        self.returns_logprobs = False
        self.exact_ids = False
        self.synced_dir: Path | None = None
        # The endpoint serves the policy (or a copy of it): the policy's config says its context.
        self.long_prompts = LongPrompts(cfg.long_prompt, context_length(model.config, tokenizer))
        self._needs_first_sync = cfg.weight_sync != "none"
        self.ids_inexact = 0                # run totals
        self.ids_retokenized = 0
        self.requested_models: list[str] = []   # distinct model names sent, in order
        self._counts: dict[str, float] = {}
        self._lock = threading.Lock()
        self._probed = False
        self._reset_reported = False
        self._check_reachable()

    # ------------------------------------------------------------------ interface
    def generate(self, prompts: list[str], num_samples: int, params: SamplingParams) -> list[list[Completion]]:
        """``num_samples`` completions for each prompt, as ``[prompt][sample]``."""
        if not prompts:
            return []
        if self._needs_first_sync:
            self._sync("initial", None)
        full_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        prompt_ids, skipped = self.long_prompts.fit(full_ids, params.max_new_tokens)
        # A prompt cut to the context goes out as the text of the tokens kept (as the ids, in the vllm dialect).
        prompts = [p if len(ids) == len(full) else self.tokenizer.decode(ids)
                   for p, ids, full in zip(prompts, prompt_ids, full_ids)]
        kept = [i for i in range(len(prompts)) if not skipped[i]]
        if kept and not self._probed:
            self._probe(prompts[kept[0]], prompt_ids[kept[0]])
        if self.supports_n:
            jobs = [(i, num_samples) for i in kept]
        else:
            jobs = [(i, 1) for i in kept for _ in range(num_samples)]
        model = self.current_model
        if not self.requested_models or self.requested_models[-1] != model:
            self.requested_models.append(model)
        results = list(self._pool.map(lambda job: self._complete(model, prompts[job[0]], prompt_ids[job[0]], job[1], params),
                                      jobs))
        # Tokenizing happens here, not in the request threads: a fast tokenizer is not safe to share.
        out: list[list[Completion]] = [[] for _ in prompts]
        for (i, _), choices in zip(jobs, results):
            for choice in choices:
                completion, retokenized, inexact = completion_from_choice(choice, prompt_ids[i], self.tokenizer)
                self.ids_retokenized += retokenized
                self.ids_inexact += inexact
                self._count("rollout/ids_retokenized", float(retokenized))
                self._count("rollout/ids_inexact", float(inexact))
                out[i].append(completion)
        self._count("rollout/samples", sum(len(o) for o in out))
        return with_skipped([out[i] for i in kept], prompt_ids, skipped, num_samples)

    def sync_weights(self, step: int) -> None:
        """Hand the endpoint the weights after optimizer step ``step`` (rollout.weight_sync)."""
        if self.cfg.weight_sync != "none":
            self._sync(f"step-{step}", step)

    def metrics(self) -> dict[str, float]:
        """Counters since the last call: requests, retries, re-tokenized and inexact ids, sync time, long prompts."""
        with self._lock:
            out, self._counts = self._counts, {}
        return {**out, **self.long_prompts.metrics()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    @property
    def current_model(self) -> str:
        if self.cfg.weight_sync == "reload" and self.synced_dir is not None:
            return str(self.synced_dir)
        return self.served_model

    # ------------------------------------------------------------------ requests
    def _count(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0.0) + value

    def _check_reachable(self) -> None:
        url = f"{self.base_url}/models"
        try:
            response = self._client.get(url, timeout=min(self.cfg.server_timeout_s, 30.0))
        except httpx.HTTPError as err:
            raise RolloutServerError(
                f"rollout.server_base_url: cannot reach {self.base_url} ({type(err).__name__}: {err}); start the "
                f"server first (vllm serve MODEL, or transformers serve) or fix rollout.server_base_url") from None
        if response.status_code in (401, 403):
            raise RolloutServerError(
                f"rollout endpoint {self.base_url} refused the request ({response.status_code}); set "
                f"rollout.server_api_key_env to the environment variable holding its key")
        if response.status_code == 404:
            raise RolloutServerError(
                f"rollout.server_base_url: {url} answered 404; the base URL of an OpenAI-compatible server usually "
                f"ends in /v1 (e.g. http://127.0.0.1:8000/v1)")

    def _post(self, url: str, body: dict, what: str):
        """POST with retries on transient failures; returns the parsed JSON body. Raises _Status on other statuses."""
        attempts = self.cfg.server_max_retries + 1
        last = ""
        for attempt in range(attempts):
            response = None
            try:
                self._count("rollout/requests")
                response = self._client.post(url, json=body)
            except httpx.HTTPError as err:
                last = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise RolloutServerError(f"malformed response from {url} ({what}): not JSON: "
                                                 f"{response.text[:200]!r}") from None
                if response.status_code not in (408, 429) and response.status_code < 500:
                    raise _Status(response.status_code, _detail(response))
                last = f"HTTP {response.status_code}: {_detail(response)}"
            if attempt + 1 < attempts:
                self._count("rollout/retries")
                wait = _retry_after(response)
                time.sleep(wait if wait is not None else min(0.5 * 2 ** attempt, 30.0) + random.uniform(0, 0.5))
        raise RolloutServerError(f"{url}: {what} failed after {attempts} attempt(s): {last}")

    def _complete(self, model: str, prompt: str, prompt_ids: list[int], n: int, params: SamplingParams) -> list[dict]:
        """The ``n`` checked choices of one request (run in a request thread)."""
        url = f"{self.base_url}/completions"
        body = request_body(self.dialect, model, prompt, prompt_ids, n, params, self.tokenizer.eos_token_id,
                            self.tokenizer.pad_token_id, self.supports_n)
        try:
            response = self._post(url, body, f"completion with model {model!r}")
        except _Status as err:
            raise RolloutServerError(self._explain(url, model, err)) from None
        return parse_choices(response, n, url)

    def _explain(self, url: str, model: str, err: _Status) -> str:
        msg = f"{url} answered {err.status} for model {model!r}: {err.detail}"
        if err.status in (401, 403):
            return msg + "; set rollout.server_api_key_env to the environment variable holding the endpoint's key"
        if "pinned" in err.detail:
            return msg + ("; rollout.weight_sync reload names a new directory each step: start transformers serve "
                          "without a model argument")
        if err.status == 404 and self.cfg.weight_sync == "reload":
            return msg + ("; this endpoint serves a fixed model (vllm serve does): use rollout.weight_sync http with a "
                          "reload endpoint, or none, and rollout.server_model set to the served model name")
        return msg

    def _probe(self, prompt: str, prompt_ids: list[int]) -> None:
        """Find the dialect (if auto), whether ``n`` is honoured and whether exact ids come back."""
        url = f"{self.base_url}/completions"
        model = self.current_model
        probe = SamplingParams(max_new_tokens=1, temperature=1.0)
        refused = []
        for dialect in [self.dialect] if self.dialect else DIALECTS:
            send_n = dialect != "transformers"        # transformers serve ignores n: ask for one
            body = request_body(dialect, model, prompt, prompt_ids, 2, probe, self.tokenizer.eos_token_id,
                                self.tokenizer.pad_token_id, send_n)
            try:
                response = self._post(url, body, f"probe with model {model!r}")
            except _Status as err:
                if err.status in (401, 403, 404) or "pinned" in err.detail or self.dialect:
                    raise RolloutServerError(self._explain(url, model, err)) from None
                refused.append(f"{dialect}: HTTP {err.status} {err.detail}")
                continue
            choices = response.get("choices") if isinstance(response, dict) else None
            if not isinstance(choices, list) or not choices:
                raise RolloutServerError(f"malformed response from {url} (probe): no 'choices' list in {str(response)[:200]!r}")
            self.dialect = dialect
            self.supports_n = send_n and len(choices) == 2
            first = choices[0] if isinstance(choices[0], dict) else {}
            self.returns_logprobs = token_logprobs(first.get("logprobs")) is not None
            self.exact_ids = exact_token_ids(first.get("logprobs")) is not None
            self._probed = True
            log.info("rollout endpoint %s: dialect %s, n %s, logprobs %s, exact token ids %s", self.base_url, dialect,
                     self.supports_n, self.returns_logprobs, self.exact_ids)
            return
        raise RolloutServerError(f"{url} refused every request dialect for model {model!r}: " + "; ".join(refused))

    # ------------------------------------------------------------------ weight sync
    def _sync(self, name: str, step: int | None) -> None:
        t = time.perf_counter()
        self._needs_first_sync = False
        path = self._save(name)
        if self.cfg.weight_sync == "http":
            try:
                self._post(self.cfg.weight_sync_url, {"path": str(path), "step": step}, f"weight reload of {path}")
            except _Status as err:
                raise RolloutServerError(f"rollout.weight_sync_url {self.cfg.weight_sync_url} answered {err.status} to "
                                         f"the reload of {path}: {err.detail}") from None
            except RolloutServerError as err:
                raise RolloutServerError(f"rollout.weight_sync_url: {err}") from None
        elif self.dialect == "transformers":
            self._unload_old_models()
        self.synced_dir = path
        self._count("rollout/weight_syncs")
        self._count("rollout/weight_sync_s", time.perf_counter() - t)

    def _save(self, name: str) -> Path:
        """Rank 0 writes the directory; with several processes the others wait for it (same weights)."""
        from critique_rl.distributed import Distributed

        processes = Distributed()
        path = self.weights_root / name
        if processes.is_main:
            path = save_policy(self.model, self.tokenizer, self.weights_root, name, self.cfg.weight_sync_keep)
        processes.barrier()
        return path

    def _unload_old_models(self) -> None:
        """transformers serve keeps each loaded model for --model-timeout seconds: drop them now."""
        root = self.base_url.removesuffix("/v1")
        try:
            response = self._client.post(f"{root}/reset")
            ok = response.status_code < 300
        except httpx.HTTPError:
            ok = False
        if not ok and not self._reset_reported:
            self._reset_reported = True
            log.warning("could not POST %s/reset to unload the previous step's model; transformers serve frees it "
                        "after --model-timeout seconds", root)

