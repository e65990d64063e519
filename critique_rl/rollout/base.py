"""What every rollout engine returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False


def rollout_sampling(cfg) -> SamplingParams:
    """How completions and refinements are sampled in training (and by the probe): ``cfg`` is a
    RolloutConfig's max_completion_length, temperature and top_p."""
    return SamplingParams(cfg.max_completion_length, cfg.temperature, cfg.top_p)


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


# ---------------------------------------------------------------------------- prompts longer than the context
LONG_PROMPT_POLICIES = ("truncate_left", "skip")
# Tokenizers without a known limit report int(1e30) (transformers' VERY_LARGE_INTEGER); no real context is this long.
_NO_LIMIT = 10 ** 9


def context_length(model_config, tokenizer=None) -> int | None:
    """Positions the model attends over: its config's ``max_position_embeddings`` (``n_positions``,
    ``max_sequence_length`` in some architectures), else the tokenizer's ``model_max_length`` unless
    that is transformers' "no limit" sentinel; None when neither says.

    >>> from types import SimpleNamespace as NS
    >>> context_length(NS(max_position_embeddings=256)), context_length(NS(), NS(model_max_length=int(1e30)))
    (256, None)
    """
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < _NO_LIMIT else None


def with_skipped(generated: list[list[Completion]], prompt_ids: list[list[int]], skipped: list[bool],
                 num_samples: int) -> list[list[Completion]]:
    """``[prompt][sample]`` completions: those ``generated`` for the prompts not skipped, in order, and for
    each skipped prompt ``num_samples`` empty ones (no tokens, text "", which the verifier scores 0,
    marked truncated; their ``prompt_ids`` are cut to the context, so a trainer scoring the
    token-less row stays in bounds).

    >>> [[c.text for c in o] for o in with_skipped([[Completion([1], [2], "a", False)]], [[1], [3]], [False, True], 1)]
    [['a'], ['']]
    """
    done = iter(generated)
    return [[Completion(list(ids), [], "", True) for _ in range(num_samples)] if skip else next(done)
            for ids, skip in zip(prompt_ids, skipped)]


class LongPrompts:
    """``rollout.long_prompt``: prompts with more tokens than the context leaves them (context minus
    max_new_tokens) are cut from the left (the question's end and the generation cue stay) or
    skipped; counted in ``metrics()`` (``rollout/prompts_truncated`` or ``rollout/prompts_skipped``)
    and reported by one logging warning, the first time.

    >>> lp = LongPrompts("truncate_left", context=6)
    >>> lp.fit([[1, 2], [1, 2, 3, 4, 5]], max_new_tokens=2), lp.metrics()
    (([[1, 2], [2, 3, 4, 5]], [False, False]), {'rollout/prompts_truncated': 1.0})
    >>> LongPrompts("skip", context=6).fit([[1, 2], [1, 2, 3, 4, 5]], max_new_tokens=2)
    ([[1, 2], [2, 3, 4, 5]], [False, True])
    """

    def __init__(self, policy: str, context: int | None):
        if policy not in LONG_PROMPT_POLICIES:
            raise ValueError(f"rollout.long_prompt = {policy!r} is not a policy; choose truncate_left or skip")
        self.policy, self.context = policy, context
        self._since_metrics = 0
        self._warned = False

    def fit(self, prompt_ids: list[list[int]], max_new_tokens: int) -> tuple[list[list[int]], list[bool]]:
        """(each prompt's ids cut to the last tokens that fit, whether it is skipped: policy skip and too long)."""
        unchanged = (prompt_ids, [False] * len(prompt_ids))
        if self.context is None:
            return unchanged
        limit = self.context - max_new_tokens
        if limit <= 0:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context of "
                             f"{self.context} tokens; lower rollout.max_completion_length (or benchmarks.max_new_tokens)")
        long = [len(ids) for ids in prompt_ids if len(ids) > limit]
        if not long:
            return unchanged
        self._since_metrics += len(long)
        if not self._warned:
            self._warned = True
            action = "cutting them from the left" if self.policy == "truncate_left" else "skipping them (empty completions)"
            log.warning("%d of %d prompts are longer than the %d tokens the model's context of %d leaves beside %d new "
                        "tokens (the longest: %d); %s (rollout.long_prompt=%s). Later ones are counted in "
                        "rollout/prompts_%s without another warning.", len(long), len(prompt_ids), limit, self.context,
                        max_new_tokens, max(long), action, self.policy, self._counter)
        cut = [ids[len(ids) - limit:] if len(ids) > limit else ids for ids in prompt_ids]
        return cut, [self.policy == "skip" and len(ids) > limit for ids in prompt_ids]

    @property
    def _counter(self) -> str:
        return "truncated" if self.policy == "truncate_left" else "skipped"

    def metrics(self) -> dict[str, float]:
        """Prompts cut or skipped since the last call (nothing when none were)."""
        if not self._since_metrics:
            return {}
        out, self._since_metrics = {f"rollout/prompts_{self._counter}": float(self._since_metrics)}, 0
        return out
