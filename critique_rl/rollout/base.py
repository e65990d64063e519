"""What every rollout engine returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    ``completion_ids`` are exactly the generated tokens (end-of-sequence included when it was
    produced), so training scores the very tokens that were sampled, whatever a decode/encode
    round trip would give.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    truncated: bool
    logprobs: list[float] | None = None   # the sampler's log-prob of each completion token, when the engine reports it
