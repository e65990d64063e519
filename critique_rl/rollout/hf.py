"""transformers ``generate``: all prompts of a phase batched, left padding, KV cache."""

from __future__ import annotations

import torch

from critique_rl.rollout.base import Completion, SamplingParams


class HFEngine:
    def __init__(self, model, tokenizer, generation_batch_size: int = 256, return_logprobs: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size
        # The sampler's log-probs cost a (batch, vocabulary) tensor per generated token, kept to the end.
        self.return_logprobs = return_logprobs

    def sync_weights(self, step: int) -> None:
        """Nothing to do: generation uses the trained model itself."""

    def metrics(self) -> dict[str, float]:
        """No counters of its own (the interface every engine has)."""
        return {}

    @torch.inference_mode()
    def generate(self, prompts: list[str], num_samples: int, params: SamplingParams) -> list[list[Completion]]:
        """``num_samples`` completions for each prompt, as ``[prompt][sample]``."""
        tok = self.tokenizer
        # Repeat prompts so one generate call samples the whole group; chunk to bound memory.
        flat_prompts = [p for p in prompts for _ in range(num_samples)]
        flat: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(flat_prompts), self.generation_batch_size):
            chunk = flat_prompts[start:start + self.generation_batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            kwargs = dict(do_sample=False) if params.greedy else dict(
                do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
            out = self.model.generate(
                **enc, max_new_tokens=params.max_new_tokens, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, output_scores=self.return_logprobs,
                return_dict_in_generate=True, **kwargs)
            generated = out.sequences[:, enc.input_ids.shape[1]:]                       # (b, new)
            logprobs = sampled_logprobs(out.scores, generated) if self.return_logprobs else None
            flat.extend(self._split(enc.input_ids, enc.attention_mask, generated, logprobs))
        self.model.train(was_training)
        return [flat[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]

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
