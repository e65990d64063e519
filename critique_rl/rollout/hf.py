"""transformers ``generate``: a phase's prompts in as few calls as its token budget allows, left padding, KV cache."""

from __future__ import annotations

import torch

from critique_rl.batching import token_budget_microbatches
from critique_rl.rollout.base import Completion, LongPrompts, SamplingParams, context_length, with_skipped


class HFEngine:
    def __init__(self, model, tokenizer, generation_batch_size: int = 256, return_logprobs: bool = False,
                 max_tokens_per_generate: int = 65536, long_prompt: str = "truncate_left"):
        """``generation_batch_size`` caps the rows of one generate call and ``max_tokens_per_generate``
        their padded tokens (rows x (longest prompt + max_new_tokens)); ``long_prompt`` is the
        policy for prompts longer than the model's context (rollout.long_prompt)."""
        self.model = model
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size
        self.max_tokens_per_generate = max_tokens_per_generate
        # The sampler's log-probs cost a (batch, vocabulary) tensor per generated token, kept to the end.
        self.return_logprobs = return_logprobs
        self.long_prompts = LongPrompts(long_prompt, context_length(model.config, tokenizer))

    def sync_weights(self, step: int) -> None:
        """Nothing to do: generation uses the trained model itself."""

    def metrics(self) -> dict[str, float]:
        """Prompts cut or skipped for being longer than the context, since the last call."""
        return self.long_prompts.metrics()

    @torch.inference_mode()
    def generate(self, prompts: list[str], num_samples: int, params: SamplingParams) -> list[list[Completion]]:
        """``num_samples`` completions for each prompt, as ``[prompt][sample]``."""
        tok = self.tokenizer
        prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"] if prompts else []
        fitted, skipped = self.long_prompts.fit(prompt_ids, params.max_new_tokens)
        # One row per (prompt, sample); rows of equal length stay together, so a group rarely spans two calls.
        rows = [p for p in range(len(prompts)) if not skipped[p] for _ in range(num_samples)]
        calls = token_budget_microbatches([len(fitted[p]) + params.max_new_tokens for p in rows],
                                          self.max_tokens_per_generate, self.generation_batch_size)
        flat: list[Completion | None] = [None] * len(rows)
        kwargs = dict(do_sample=False) if params.greedy else dict(
            do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        was_training = self.model.training
        self.model.eval()
        for call in calls:
            # Rows of a call in their original order: a phase that fits one call samples as it always did.
            call = sorted(call)
            enc = tok.pad({"input_ids": [fitted[rows[i]] for i in call]}, padding=True,
                          return_tensors="pt").to(self.model.device)
            out = self.model.generate(
                **enc, max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, output_scores=self.return_logprobs,
                return_dict_in_generate=True, **kwargs)
            generated = out.sequences[:, enc.input_ids.shape[1]:]                       # (b, new)
            logprobs = sampled_logprobs(out.scores, generated) if self.return_logprobs else None
            for i, completion in zip(call, self._split(enc.input_ids, enc.attention_mask, generated, logprobs)):
                flat[i] = completion
        self.model.train(was_training)
        groups = [flat[k:k + num_samples] for k in range(0, len(flat), num_samples)]
        return with_skipped(groups, fitted, skipped, num_samples)

    def _split(self, input_ids, attention_mask, generated, logprobs=None) -> list[Completion]:
        eos = self.tokenizer.eos_token_id
        result = []
        rows = logprobs.tolist() if logprobs is not None else [None] * len(generated)
        for ids, mask, gen, lps in zip(input_ids.tolist(), attention_mask.tolist(), generated.tolist(), rows):
            prompt_ids = [t for t, m in zip(ids, mask) if m]
            if eos in gen:
                completion_ids, truncated = gen[:gen.index(eos) + 1], False
            else:
                completion_ids, truncated = gen, True
            text = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
            result.append(Completion(prompt_ids, completion_ids, text, truncated,
                                     lps[:len(completion_ids)] if lps is not None else None))
        return result


def sampled_logprobs(scores, generated: torch.Tensor) -> torch.Tensor:
    """Log-probs (b, new) of the generated tokens under the distributions they were sampled from.

    ``scores`` are generate's processed logits, one (b, V) tensor per new token, after temperature
    and top-p, so their log-softmax is the sampler's distribution.
    """
    logp = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in scores], dim=1)     # (b, new, V)
    return logp.gather(-1, generated[:, :logp.shape[1], None]).squeeze(-1)
