"""OpenAI-compatible endpoints (OpenAI, vLLM, SGLang, transformers serve ...) through the official async client.

All critiques of a step go out concurrently on a private event loop (the trainer is
synchronous), at most ``max_concurrency`` in flight and within the optional per-minute request
and token budgets. Retries live in this one layer (the client's own are off): 429, 408, 5xx,
timeouts and dropped connections back off exponentially with jitter, or as long as Retry-After
says, until ``max_retries`` or the critique's ``deadline_s``. Other 4xx and malformed bodies fail
at once. 401/403 raise ``CriticAuthError`` naming the key's environment variable. The key is read
from the environment only and never written anywhere: error texts are redacted.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import threading
import time
from dataclasses import dataclass

import openai
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from critique_rl.api_keys import read_api_key
from critique_rl.config import CriticConfig
from critique_rl.critics.base import CriticAuthError
from critique_rl.critics.generative import Generation
from critique_rl.critics.prompting import Prompt
from critique_rl.critics.ratelimit import RateLimiter

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4        # prompt size estimate for the token budget, corrected by the reported usage


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)        # timeouts and dropped connections included


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (Retry-After-Ms, Retry-After as seconds or HTTP date), else None."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(float(value), 0.0)
            except ValueError:
                return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        pass        # an unreadable header: back off as usual
    return None


class wait_retry_after(wait_base):
    """The server's Retry-After when it gives one, else the fallback wait."""

    def __init__(self, fallback: wait_base):
        self.fallback = fallback

    def __call__(self, retry_state) -> float:
        asked = retry_after_s(retry_state.outcome.exception())
        return asked if asked is not None else self.fallback(retry_state)


@dataclass
class _Call:
    """One critique's requests; survives the deadline's cancellation."""

    tokens: float           # charged to the token budget per request until the usage is known
    attempts: int = 0


class OpenAIGenerator:
    backend = "openai"

    def __init__(self, cfg: CriticConfig):
        self.cfg = cfg
        self.model = cfg.model
        self.endpoint = cfg.base_url or "the default OpenAI endpoint"
        self._key = read_api_key(cfg.api_key_env, "critic.api_key_env", "the critic API key")
        self._requests = RateLimiter(cfg.requests_per_minute)
        self._tokens = RateLimiter(cfg.tokens_per_minute)
        self._reported: set[str] = set()
        # The trainer is synchronous: a private loop in a thread runs each step's requests and
        # keeps the client's connections alive from step to step.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="critic-openai", daemon=True)
        self._thread.start()
        self._client = self._run(self._make_client())

    async def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=self._key or "no-key", base_url=self.cfg.base_url or None,
                                  max_retries=0, timeout=self.cfg.timeout_s)

    def _run(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()         # e.g. KeyboardInterrupt: stop the requests in flight
            raise

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        return self._run(self._generate_all(prompts))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    # ------------------------------------------------------------------ on the loop
    async def _generate_all(self, prompts: list[Prompt]) -> list[Generation]:
        slots = asyncio.Semaphore(self.cfg.max_concurrency)

        async def one(prompt: Prompt) -> Generation:
            async with slots:
                return await self._generate(prompt)

        tasks = [asyncio.ensure_future(one(p)) for p in prompts]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:      # after a CriticAuthError the others are pointless
                task.cancel()

    async def _generate(self, prompt: Prompt) -> Generation:
        size = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
        call = _Call(tokens=size / CHARS_PER_TOKEN + self.cfg.max_tokens)
        await self._pace(call)      # waiting for budget is queueing: the deadline starts after it
        start = time.perf_counter()
        try:
            text, usage = await asyncio.wait_for(self._with_retries(prompt, call), self.cfg.deadline_s)
            return Generation(text, time.perf_counter() - start, call.attempts,
                              getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)
        except asyncio.TimeoutError:
            kind, error = "deadline", f"deadline of {self.cfg.deadline_s:g} s passed after {call.attempts} request(s)"
        except (openai.OpenAIError, ValueError) as err:     # ValueError: a body that is not a completion
            kind, error = self._describe(err)
        self._report(kind, error)
        return Generation(None, time.perf_counter() - start, call.attempts, error=error)

    async def _pace(self, call: _Call) -> None:
        await self._requests.acquire(1)
        await self._tokens.acquire(call.tokens)

    async def _with_retries(self, prompt: Prompt, call: _Call):
        cfg = self.cfg
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=wait_retry_after(wait_exponential(multiplier=cfg.backoff_s, max=cfg.backoff_max_s) + wait_random(0, cfg.backoff_s)),
            stop=stop_after_attempt(cfg.max_retries + 1) | stop_before_delay(cfg.deadline_s),
            reraise=True)
        return await retrying(self._request, prompt, call)

    async def _request(self, prompt: Prompt, call: _Call):
        cfg = self.cfg
        if call.attempts:
            await self._pace(call)
        call.attempts += 1
        sampling = dict(model=cfg.model, max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        try:
            if isinstance(prompt, str):
                response = await self._client.completions.create(prompt=prompt, **sampling)
                text = response.choices[0].text if response.choices else None
            else:
                response = await self._client.chat.completions.create(messages=prompt, **sampling)
                text = response.choices[0].message.content if response.choices else None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            # from None: the response body may quote the key.
            if not cfg.api_key_env:
                raise CriticAuthError(f"critic API {self.endpoint} requires a key ({err.status_code}); set "
                                      f"critic.api_key_env to the environment variable holding it") from None
            raise CriticAuthError(
                f"critic API {self.endpoint} rejected the key in ${cfg.api_key_env} ({err.status_code}); "
                f"set {cfg.api_key_env} to a valid key for critic.model {cfg.model!r}") from None
        if response.usage is not None:
            self._tokens.settle(response.usage.total_tokens - call.tokens)
        return text, response.usage

    # ------------------------------------------------------------------ errors, key kept out
    def _describe(self, err: Exception) -> tuple[str, str]:
        """(kind, message) of an error; the message is cut short and never contains the key."""
        kind = f"HTTP {err.status_code}" if isinstance(err, openai.APIStatusError) else type(err).__name__
        text = str(err).replace(self._key, "***") if self._key else str(err)
        return kind, f"{kind}: {text[:300]}"

    def _report(self, kind: str, error: str) -> None:
        """Log each kind of failure once; every failure is counted in the metrics."""
        if kind not in self._reported:
            self._reported.add(kind)
            log.warning("critic request to %s failed (%s); the fallback critique is used", self.endpoint, error)

