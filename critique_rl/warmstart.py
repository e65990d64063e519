"""Warm start: train the tiny policy from scratch to solve easy problems and to use critiques.

The mix is solve transcripts of easy problems (never hard ones) and refinement transcripts
(question, wrong attempt, critique -> corrected solution) on easy and hard problems, all
rendered through the same templates and critic that RL uses.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from critique_rl.batching import (
    pad_sequences,
    sequence_logits,
    token_budget_microbatches,
)
from critique_rl.config import Config
from critique_rl.critics.base import CritiqueRequest, default_template
from critique_rl.critics.rule import RuleCritic
from critique_rl.modeling import build_char_tokenizer, build_tiny_model
from critique_rl.tasks.arithmetic import ProblemSource, noisy_solution, wrong_attempt
from critique_rl.templates import load_template


class TranscriptMaker:
    """Renders (prompt, completion) pairs for supervised warm-start steps."""

    def __init__(self, cfg: Config, source: ProblemSource):
        self.cfg = cfg
        self.source = source
        self.solve = load_template(cfg.prompts.solve)
        self.refine = load_template(cfg.prompts.refine)
        self.critic = RuleCritic(default_template(cfg.critic, cfg.task.name))

    def pair(self, rng: random.Random) -> tuple[str, str]:
        ws = self.cfg.warmstart
        if rng.random() >= ws.refine_fraction:
            p = self.source.sample(rng, hard=False)
            solution = noisy_solution(rng, p, ws.result_noise) if ws.result_noise else p.solution
            return self.solve.render(question=p.question), solution
        p = self.source.sample(rng, hard=rng.random() < ws.hard_refine_fraction)
        attempt = wrong_attempt(rng, p)
        [critique] = self.critic.critique([CritiqueRequest(p.question, attempt, str(p.answer), False, p)])
        prompt = self.refine.render(question=p.question, attempt=attempt, critique=critique.text)
        return prompt, p.solution


def warm_start(cfg: Config, out_dir: Path, show_progress: bool = True) -> Path:
    """Train from scratch and save model + tokenizer to ``out_dir`` (HF format)."""
    ws = cfg.warmstart
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(ws, tokenizer, cfg.seed)
    maker = TranscriptMaker(cfg, ProblemSource(cfg.task, cfg.seed))
    rng = random.Random(f"{cfg.seed}/warmstart")
    optimizer = torch.optim.AdamW(model.parameters(), lr=ws.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < ws.warmup_steps:
            return (step + 1) / ws.warmup_steps
        progress = (step - ws.warmup_steps) / max(1, ws.steps - ws.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    bar = tqdm(range(ws.steps), desc="warm start", disable=None if show_progress else True, mininterval=2.0)
    for step in bar:
        pairs = [maker.pair(rng) for _ in range(ws.batch_size)]
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p, _ in pairs]
        completion_ids = [tokenizer(c, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for _, c in pairs]
        num_targets = sum(len(c) for c in completion_ids)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        # Short solve transcripts and long refinement transcripts go in separate forwards: no padding waste.
        for micro in token_budget_microbatches([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)], ws.max_tokens_per_microbatch):
            input_ids, attention_mask, completion_mask = pad_sequences(
                [prompt_ids[i] for i in micro], [completion_ids[i] for i in micro], tokenizer.pad_token_id)
            logits = sequence_logits(model, input_ids, attention_mask)          # (b, T-1, V)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
            loss = (nll * completion_mask[:, 1:]).sum() / num_targets
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        if show_progress and (step + 1) % 100 == 0:
            tqdm.write(f"warm start step {step + 1}/{ws.steps} | loss {total:.4f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
