"""transformers ``generate``: all prompts of a phase batched, left padding, KV cache."""

from __future__ import annotations

import torch

from critique_rl.rollout.base import Completion, SamplingParams


class HFEngine:
    def __init__(self, model, tokenizer, generation_batch_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size

    def sync_weights(self, step: int) -> None:
        """Nothing to do: generation uses the trained model itself."""

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
                eos_token_id=tok.eos_token_id, **kwargs)
            prompt_len = enc.input_ids.shape[1]
            flat.extend(self._split(enc.input_ids, enc.attention_mask, out[:, prompt_len:]))
        self.model.train(was_training)
        return [flat[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]

    def _split(self, input_ids, attention_mask, generated) -> list[Completion]:
        eos = self.tokenizer.eos_token_id
        result = []
        for ids, mask, gen in zip(input_ids.tolist(), attention_mask.tolist(), generated.tolist()):
            prompt_ids = [t for t, m in zip(ids, mask) if m]
            if eos in gen:
                completion_ids, truncated = gen[:gen.index(eos) + 1], False
            else:
                completion_ids, truncated = gen, True
            text = self.tokenizer.decode(completion_ids, skip_special_tokens=True)
            result.append(Completion(prompt_ids, completion_ids, text, truncated))
        return result
