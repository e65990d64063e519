"""OpenAI-compatible endpoints (OpenAI, vLLM, SGLang, transformers serve ...) through the official async client.

All critiques of a step go out concurrently on a private event loop (the trainer is
synchronous), at most ``max_concurrency`` in flight and within the optional per-minute request
and token budgets. Retries live in this one layer (the client's own are off): 429, 408, 5xx,
timeouts and dropped connections back off exponentially with jitter, or as long as Retry-After
says, until ``max_retries`` or the critique's ``deadline_s``. Other 4xx and malformed bodies fail
at once. 401/403 raise ``CriticAuthError`` naming the key's environment variable. The key is read
from the environment only and never written anywhere: error texts are redacted.

A circuit breaker keeps a dead endpoint cheap: after ``circuit_failures`` requests in a row could
not reach it (refused, DNS, timeouts, dropped connections, 5xx), requests fail at once (reason
``circuit_open``, no retries) for ``circuit_cooldown_s``; then one probe request goes out, whose
answer closes the circuit and whose failure opens it again.
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


def _unreachable(exc: BaseException) -> bool:
    """The endpoint did not answer, or answered that it cannot serve: what the circuit breaker counts."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 408 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)        # timeouts and dropped connections included


def _transient(exc: BaseException) -> bool:
    return _unreachable(exc) or (isinstance(exc, openai.APIStatusError) and exc.status_code == 429)


def fallback_reason(exc: BaseException) -> str:
    """The FALLBACK_REASONS key (or http_<status>) of a request's final error."""
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    return "bad_response" if isinstance(exc, ValueError) else "error"


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


class CircuitOpen(Exception):
    """A request refused by the open circuit breaker: it is not sent."""


class CircuitBreaker:
    """Counts requests in a row that could not reach the endpoint; ``failures`` of them open the
    circuit for ``cooldown_s``, after which one probe request is let through (0 failures: off).

    It lives on the generator's event loop: no locks.
    """

    def __init__(self, failures: int, cooldown_s: float):
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.open_until: float | None = None    # monotonic time; None: closed
        self.probing = False                    # the probe request is in flight

    @property
    def refusing(self) -> bool:
        return self.open_until is not None and (self.probing or time.monotonic() < self.open_until)

    def admit(self) -> bool:
        """Raise ``CircuitOpen`` while refusing; True when the admitted request is the probe."""
        if self.refusing:
            raise CircuitOpen(f"circuit open after {self.failures} failed requests in a row")
        self.probing = self.open_until is not None
        return self.probing

    def settle(self, probe: bool, reached: bool | None) -> str | None:
        """Record a request's outcome (None: cancelled, no evidence); returns 'opened' or 'closed'
        when the circuit changed state, for the log."""
        if probe:
            self.probing = False
        if reached is None:
            return None
        if reached:
            was_open, self.failures, self.open_until = self.open_until is not None, 0, None
            return "closed" if was_open else None
        self.failures += 1
        if probe or (self.open_until is None and 0 < self.threshold <= self.failures):
            was_open, self.open_until = self.open_until is not None, time.monotonic() + self.cooldown_s
            return None if was_open else "opened"
        return None


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
        self._breaker = CircuitBreaker(cfg.circuit_failures, cfg.circuit_cooldown_s)
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
            reason, error = "deadline", f"deadline of {self.cfg.deadline_s:g} s passed after {call.attempts} request(s)"
        except (openai.OpenAIError, ValueError, CircuitOpen) as err:     # ValueError: a body that is not a completion
            reason, error = fallback_reason(err), self._describe(err)
        if reason != "circuit_open":                 # the opening of the circuit was reported
            self._report(reason, error)
        return Generation(None, time.perf_counter() - start, call.attempts, error=error, reason=reason)

    async def _pace(self, call: _Call) -> None:
        await self._requests.acquire(1)
        await self._tokens.acquire(call.tokens)

    async def _with_retries(self, prompt: Prompt, call: _Call):
        cfg = self.cfg
        retrying = AsyncRetrying(
            # An open circuit ends the retries: the endpoint is down, waiting for it is the cool-down's job.
            retry=retry_if_exception(lambda exc: _transient(exc) and not self._breaker.refusing),
            wait=wait_retry_after(wait_exponential(multiplier=cfg.backoff_s, max=cfg.backoff_max_s) + wait_random(0, cfg.backoff_s)),
            stop=stop_after_attempt(cfg.max_retries + 1) | stop_before_delay(cfg.deadline_s),
            reraise=True)
        return await retrying(self._request, prompt, call)

    async def _request(self, prompt: Prompt, call: _Call):
        if call.attempts:
            await self._pace(call)
        probe = self._breaker.admit()
        call.attempts += 1
        try:
            result = await self._send(prompt, call)
        except BaseException as err:
            reached = None if isinstance(err, asyncio.CancelledError) else not _unreachable(err)
            self._circuit(self._breaker.settle(probe, reached), err)
            raise
        self._circuit(self._breaker.settle(probe, True), None)
        return result

    async def _send(self, prompt: Prompt, call: _Call):
        cfg = self.cfg
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
    def _describe(self, err: Exception) -> str:
        """The error's message, cut short and never containing the key."""
        kind = f"HTTP {err.status_code}" if isinstance(err, openai.APIStatusError) else type(err).__name__
        text = str(err)
        if isinstance(err, openai.APIConnectionError) and err.__cause__:     # its own text is just "Connection error."
            text += f" ({err.__cause__})"
        text = text.replace(self._key, "***") if self._key else text
        return f"{kind}: {text[:300]}"

    def _report(self, reason: str, error: str) -> None:
        """Log each kind of failure once; every failure is counted in the metrics."""
        if reason not in self._reported:
            self._reported.add(reason)
            log.warning("critic request to %s failed (%s); the fallback critique is used", self.endpoint, error)

    def _circuit(self, change: str | None, err: BaseException | None) -> None:
        """Log the circuit breaker's openings and closings."""
        if change == "opened":
            log.warning("critic endpoint %s failed %d requests in a row (last: %s): critiques fall back without "
                        "requests for %g s, then one request probes it", self.endpoint, self._breaker.failures,
                        self._describe(err), self.cfg.circuit_cooldown_s)
        elif change == "closed":
            log.warning("critic endpoint %s answers again: circuit closed", self.endpoint)
