"""Critics whose chain-of-thought critiques a model writes (openai, hf, self).

What the backends share lives here; a backend only turns prompts into ``Generation``s.

* ``indicative`` and ``ground_truth`` critiques are rendered from their templates: no model call.
* ``cot``: the critic prompt is rendered (``CriticPrompt``), looked up in the cache, sent to the
  model; the critique's verdict line must agree with the verifier, else it is regenerated up to
  ``max_verdict_retries`` times. A critique that cannot be had (deadline, exhausted retries,
  an error, empty output, no verdict line) or never agrees is replaced by the ``fallback``
  critique, and counted; its ``provenance["fallback"]`` names the reason (``FALLBACK_REASONS``)
  and ``provenance["error"]`` holds the request's error message, if any.

``metrics()`` returns per-step values and resets them (they cover the critiques since the
previous call):

    critic/requests           requests sent to the model, retries included (hf, self: prompts generated)
    critic/retries            requests re-sent after a transient error
    critic/failures           critiques without usable output (gave up, error, empty, no verdict line)
    critic/fallbacks          critiques replaced by the fallback: failures + verdicts that never agreed
    critic/verdict_retries    regenerations because the verdict disagreed with the verifier
    critic/circuit_open       critiques ended by the open circuit breaker (openai): no request, or no more retries
    critic/cache_hits         outputs replayed from the cache (not in requests, tokens or latency)
    critic/latency_p50, _p95  seconds per model output, retries and waits included
    critic/prompt_tokens, critic/completion_tokens   as the endpoint reports them
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from critique_rl.config import CriticConfig
from critique_rl.critics.base import (
    Critique,
    CritiqueRequest,
    default_template,
    parse_verdict,
    verdict_word,
)
from critique_rl.critics.cache import CritiqueCache
from critique_rl.critics.prompting import CriticPrompt, Prompt
from critique_rl.templates import load_template


# Why a critique fell back (provenance["fallback"], samples.jsonl's critique_fallback); plus
# http_<status> for an HTTP error status, e.g. http_500.
FALLBACK_REASONS = {
    "timeout": "the HTTP request timed out (critic.timeout_s), retries included",
    "deadline": "critic.deadline_s passed before an answer",
    "connection": "the endpoint could not be reached (refused, DNS, dropped)",
    "circuit_open": "not sent (or not retried): the circuit breaker is open after repeated failures",
    "bad_response": "the endpoint's answer is not a completion",
    "error": "another client error",
    "empty": "the critique is empty",
    "no_verdict": "the critique states no verdict",
    "verdict_disagrees": "every regeneration's verdict disagreed with the verifier",
}


@dataclass
class Generation:
    """A model's output for one prompt; ``text`` is None when none could be had (``reason`` and ``error`` say why)."""

    text: str | None
    latency_s: float = 0.0
    attempts: int = 1              # requests sent for it, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None       # the error message
    reason: str | None = None      # its kind, a FALLBACK_REASONS key or http_<status>
    cached: bool = False


class Generator(Protocol):
    backend: str                   # 'openai' | 'hf' | 'self'
    model: str

    def generate(self, prompts: list[Prompt]) -> list[Generation]: ...


COUNTERS = ("requests", "retries", "failures", "fallbacks", "verdict_retries", "cache_hits", "circuit_open",
            "prompt_tokens", "completion_tokens")


class CriticStats:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.latencies: list[float] = []

    def add(self, g: Generation) -> None:
        if g.cached:
            self.counts["cache_hits"] += 1
            return
        if g.reason == "circuit_open":
            self.counts["circuit_open"] += 1
        if not g.attempts:          # never sent: no request, no latency
            return
        self.counts["requests"] += g.attempts
        self.counts["retries"] += max(g.attempts - 1, 0)
        self.counts["prompt_tokens"] += g.prompt_tokens
        self.counts["completion_tokens"] += g.completion_tokens
        self.latencies.append(g.latency_s)

    def snapshot(self) -> dict[str, float]:
        out = {f"critic/{k}": float(v) for k, v in self.counts.items()}
        for q in (50, 95):   # NaN (logged as null) in a step without model calls
            out[f"critic/latency_p{q}"] = float(np.percentile(self.latencies, q)) if self.latencies else float("nan")
        return out


class GenerativeCritic:
    def __init__(self, cfg: CriticConfig, task: str, generator: Generator, cache: CritiqueCache | None):
        self.cfg = cfg
        self.generator = generator
        self.cache = cache
        self.prompt = CriticPrompt(cfg, task)
        self.direct = load_template(default_template(cfg, task)) if cfg.critique_type != "cot" else None
        self.fallback = load_template(cfg.fallback_template or f"{task}/critique_{cfg.fallback}.jinja")
        self.sampling = dict(api=cfg.api, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
        self.stats = CriticStats()
        self._check_templates()

    def _check_templates(self) -> None:
        """Render every template once on a placeholder, so a wrong variable fails before training."""
        request = CritiqueRequest("1+2", "1+2=4; answer 4", "3", False)
        self.prompt.render(request)
        for template in (self.direct, self.fallback):
            if template is not None:
                template.render(**self._values(request))

    @staticmethod
    def _values(r: CritiqueRequest) -> dict:
        return dict(question=r.question, attempt=r.attempt, reference=r.reference, verdict=verdict_word(r.correct))

    def _rendered(self, template, r: CritiqueRequest, provenance: dict) -> Critique:
        return Critique(template.render(**self._values(r)).strip(), verdict_word(r.correct), self.generator.backend, provenance)

    # ------------------------------------------------------------------ generation, through the cache
    def _generate(self, prompts: list[Prompt], sample: int) -> list[Generation]:
        keys = [CritiqueCache.key(backend=self.generator.backend, model=self.generator.model, prompt=p,
                                  sampling=self.sampling, sample=sample) for p in prompts] if self.cache else []
        found = [self.cache.get(k) for k in keys] if self.cache else [None] * len(prompts)
        missing = [i for i, hit in enumerate(found) if hit is None]
        fresh = iter(self.generator.generate([prompts[i] for i in missing]) if missing else [])
        out = [Generation(hit[0], attempts=0, prompt_tokens=hit[1], completion_tokens=hit[2], cached=True)
               if hit is not None else next(fresh) for hit in found]
        if self.cache:
            self.cache.put_many([(keys[i], out[i].text, out[i].prompt_tokens, out[i].completion_tokens)
                                 for i in missing if out[i].text])
        for g in out:
            self.stats.add(g)
        return out

    # ------------------------------------------------------------------ the critic interface
    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        if self.direct is not None:
            return [self._rendered(self.direct, r, {"template": str(self.direct.path)}) for r in requests]
        prompts = [self.prompt.render(r) for r in requests]
        results: list[Critique | None] = [None] * len(requests)
        provenance: list[dict] = [{} for _ in requests]
        retries = [0] * len(requests)
        pending = list(range(len(requests)))
        for sample in range(self.cfg.max_verdict_retries + 1):
            if not pending:
                break
            disagreeing = []
            for i, g in zip(pending, self._generate([prompts[i] for i in pending], sample)):
                retries[i] += max(g.attempts - 1, 0)
                provenance[i] = {"model": self.generator.model, "cached": g.cached, "retries": retries[i],
                                 "verdict_retries": sample, "fallback": None}
                verdict = parse_verdict(g.text) if g.text else None
                if verdict is None:
                    self.stats.counts["failures"] += 1
                    if g.error:
                        provenance[i]["error"] = g.error
                    reason = g.reason or ("error" if g.error else "empty" if not (g.text or "").strip() else "no_verdict")
                    results[i] = self._fall_back(requests[i], provenance[i], reason)
                elif verdict != verdict_word(requests[i].correct):
                    disagreeing.append(i)
                else:
                    results[i] = Critique(g.text.strip(), verdict, self.generator.backend, provenance[i])
            pending = disagreeing
            if sample < self.cfg.max_verdict_retries:
                self.stats.counts["verdict_retries"] += len(pending)
        for i in pending:
            results[i] = self._fall_back(requests[i], provenance[i], "verdict_disagrees")
        return results

    def _fall_back(self, request: CritiqueRequest, provenance: dict, reason: str) -> Critique:
        self.stats.counts["fallbacks"] += 1
        return self._rendered(self.fallback, request, {**provenance, "fallback": reason})

    def metrics(self) -> dict[str, float]:
        out = self.stats.snapshot()
        self.stats.reset()
        return out

    def close(self) -> None:
        """Release the backend's connections or threads and the cache file."""
        if hasattr(self.generator, "close"):
            self.generator.close()
        if self.cache:
            self.cache.close()
