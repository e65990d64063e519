"""Warm starts: tiny models trained from scratch on (prompt, completion) transcripts.

* The policy (``warm_start``): solve transcripts of easy problems (hard ones only as
  ``warmstart.misconception_fraction``'s systematically wrong solutions), refinement
  transcripts (question, wrong attempt, critique -> corrected solution) on easy and hard
  problems, and with ``warmstart.critique_fraction`` critique transcripts, so that the policy
  can critique its own attempts (``critic.backend: self``).
* The critic model (``warm_start_critic``): critique transcripts, the critic prompt of a
  correct, wrong or deliberately flawed attempt -> the rule critic's chain-of-thought critique,
  and short solve transcripts that teach it copying and addition cheaply, for
  ``critic.backend: hf`` (or ``openai`` through ``transformers serve``).

Everything is rendered through the same templates and critic that RL uses, and one loop,
``train_supervised``, trains both from a pair maker.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from critique_rl.batching import (
    pad_sequences,
    sequence_logits,
    token_budget_microbatches,
)
from critique_rl.config import Config, CriticConfig
from critique_rl.critics.base import CritiqueRequest, default_template
from critique_rl.critics.prompting import CriticPrompt
from critique_rl.critics.rule import RuleCritic
from critique_rl.modeling import build_char_tokenizer, build_tiny_model
from critique_rl.tasks.arithmetic import (
    Problem,
    ProblemSource,
    misconceived_solution,
    noisy_solution,
    problem_from_operands,
    verify,
    wrong_attempt,
)
from critique_rl.templates import load_template

Pair = tuple[str, str]                  # (prompt, completion)

# The critic model's chat template: ChatML, because `transformers serve` finds a qwen2 model's
# reply after "<|im_start|>assistant\n". The char tokenizer spells its markers out in characters.
CRITIC_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# How `transformers serve` reads the reply of a chat request: what follows the assistant turn's
# opening, up to <eos> (its qwen2 default closes the reply at an <|im_end|> only, and the critic
# ends with <eos>, which the default keeps in the text).
CRITIC_RESPONSE_TEMPLATE = {"defaults": {"role": "assistant"}, "start_anchor": "<|im_start|>assistant\n",
                            "fields": {"content": {"close_pattern": r"\s*(?:<eos>|<\|im_end\|>)", "content": "text"}}}


# The critic settings of the critic model: `critique-rl pipeline --critic model` applies them before
# the command line's overrides (examples/critic_model.yaml holds the same). critic.model empty: the
# pipeline and `train` train the model into OUT/critic_model; 80 tokens hold a critique of the
# default three-term problems (~50-72 characters).
CRITIC_MODEL_OVERRIDES = ("critic.backend=hf", "critic.model=", "critic.api=completions", "critic.max_tokens=80",
                          "critic.temperature=0.5", "critic.max_concurrency=64")


def flawed_attempt(rng: random.Random, problem: Problem) -> str:
    """A deliberately flawed attempt, unlike ``wrong_attempt``'s, so that a critic trained on it
    sees varied inputs: an operand copied wrong (the arithmetic then right), a truncated attempt,
    the operands in another order (right arithmetic, a different path), or random digit slips."""
    kind = rng.randrange(4)
    operands = list(problem.operands)
    if kind == 0:                           # a wrong operand copied, computed on consistently
        i = rng.randrange(len(operands))
        x = operands[i]
        operands[i] = next(v for v in (x + rng.choice([-10, -1, 1, 10, 9, -9]), x + 1) if v >= 0 and v != x)
    elif kind == 1:                         # cut off anywhere, the final answer included
        text = rng.choice([problem.solution, wrong_attempt(rng, problem)])
        return text[:rng.randrange(1, len(text))].rstrip()
    elif kind == 2:                         # another order of the operands (a different one when there is one)
        if len(set(operands)) > 1:
            while tuple(operands) == problem.operands:
                rng.shuffle(operands)
    else:
        return noisy_solution(rng, problem, 0.15)
    return problem_from_operands(tuple(operands)).solution      # right arithmetic on these operands


class CritiqueTranscripts:
    """(critic prompt, the rule critic's CoT critique) pairs of correct, wrong and flawed attempts.

    The prompt is what a model critic with ``critic`` (its prompt and system templates, whether
    it is shown the reference, ``critic.reference``) reads: raw (``critic.api: completions``),
    or, given a ``tokenizer`` with a chat template, for a ``chat_fraction`` share through it as
    ``critic.api: chat`` renders it. The mix is ``cfg.critic_model``'s (hard_fraction,
    correct_fraction, flawed_fraction).
    """

    def __init__(self, cfg: Config, source: ProblemSource, critic: CriticConfig, tokenizer=None, chat_fraction: float = 0.0):
        self.mix = cfg.critic_model
        self.source = source
        self.critic_cfg = critic
        self.raw = CriticPrompt(dataclasses.replace(critic, api="completions"), cfg.task.name)
        self.chat = CriticPrompt(dataclasses.replace(critic, api="chat"), cfg.task.name)
        self.tokenizer = tokenizer if tokenizer is not None and getattr(tokenizer, "chat_template", None) else None
        self.chat_fraction = chat_fraction
        self.rule = RuleCritic(default_template(dataclasses.replace(critic, critique_type="cot", template=""), cfg.task.name))

    def attempt(self, rng: random.Random, problem: Problem) -> str:
        u = rng.random()
        if u < self.mix.correct_fraction:
            return problem.solution
        if u < self.mix.correct_fraction + self.mix.flawed_fraction:
            return flawed_attempt(rng, problem)
        return wrong_attempt(rng, problem)

    def request(self, problem: Problem, attempt: str) -> CritiqueRequest:
        reference = problem.solution if self.critic_cfg.reference == "solution" else str(problem.answer)
        return CritiqueRequest(problem.question, attempt, reference, verify(problem.answer, attempt) > 0, problem)

    def prompt(self, request: CritiqueRequest, chat: bool) -> str:
        if chat:
            return self.tokenizer.apply_chat_template(self.chat.render(request), tokenize=False, add_generation_prompt=True)
        return self.raw.render(request)

    def target(self, request: CritiqueRequest) -> str:
        [critique] = self.rule.critique([request])
        return critique.text

    def pair(self, rng: random.Random) -> Pair:
        problem = self.source.sample(rng, hard=rng.random() < self.mix.hard_fraction)
        request = self.request(problem, self.attempt(rng, problem))
        chat = self.tokenizer is not None and rng.random() < self.chat_fraction
        return self.prompt(request, chat), self.target(request)


class CriticModelTranscripts:
    """The critic model's mix: critique transcripts, and a ``critic_model.solve_fraction`` share of
    solve transcripts (question -> reference solution, easy and hard problems alike): short
    sequences that teach the copying and the additions a critique checks at a fraction of the cost
    of a critic prompt."""

    def __init__(self, cfg: Config, source: ProblemSource, tokenizer):
        cm = cfg.critic_model
        self.cfg = cfg
        self.source = source
        self.solve = load_template(cfg.prompts.solve)
        self.critiques = CritiqueTranscripts(cfg, source, critic_model_critic(cfg), tokenizer, cm.chat_fraction)

    def pair(self, rng: random.Random) -> Pair:
        cm = self.cfg.critic_model
        if cm.solve_fraction and rng.random() < cm.solve_fraction:
            p = self.source.sample(rng, hard=rng.random() < cm.hard_fraction)
            return self.solve.render(question=p.question), p.solution
        return self.critiques.pair(rng)


class TranscriptMaker:
    """Renders the policy's (prompt, completion) pairs for supervised warm-start steps."""

    def __init__(self, cfg: Config, source: ProblemSource):
        self.cfg = cfg
        self.source = source
        self.solve = load_template(cfg.prompts.solve)
        self.refine = load_template(cfg.prompts.refine)
        self.critic = RuleCritic(default_template(cfg.critic, cfg.task.name))
        # Critique transcripts as the policy's own critic prompt shows them (critic.backend self).
        self.critiques = CritiqueTranscripts(cfg, source, cfg.critic) if cfg.warmstart.critique_fraction > 0 else None

    def pair(self, rng: random.Random) -> Pair:
        ws = self.cfg.warmstart
        # No draw at critique_fraction 0: the mix (and every later draw) stays what it was without it.
        if self.critiques is not None and rng.random() < ws.critique_fraction:
            return self.critiques.pair(rng)
        if rng.random() >= ws.refine_fraction:
            # No draw at misconception_fraction 0, as for critique_fraction.
            if ws.misconception_fraction and rng.random() < ws.misconception_fraction:
                p = self.source.sample(rng, hard=True)
                return self.solve.render(question=p.question), misconceived_solution(p, self.cfg.task.hard_threshold)
            p = self.source.sample(rng, hard=False)
            solution = noisy_solution(rng, p, ws.result_noise) if ws.result_noise else p.solution
            return self.solve.render(question=p.question), solution
        p = self.source.sample(rng, hard=rng.random() < ws.hard_refine_fraction)
        attempt = wrong_attempt(rng, p)
        [critique] = self.critic.critique([CritiqueRequest(p.question, attempt, str(p.answer), False, p)])
        prompt = self.refine.render(question=p.question, attempt=attempt, critique=critique.text)
        return prompt, p.solution


def train_supervised(model, tokenizer, make_pair: Callable[[random.Random], Pair], rng: random.Random, schedule,
                     desc: str = "warm start", show_progress: bool = True, prompt_weight: float = 0.0) -> list[float]:
    """Train ``model`` on ``schedule.steps`` batches of ``schedule.batch_size`` pairs from ``make_pair``.

    The loss is the mean negative log-likelihood of the completion tokens (and EOS), each prompt
    token (but the first) counted with ``prompt_weight`` (0: prompts are not trained); AdamW with
    linear warmup and cosine decay to 10% of ``schedule.learning_rate``. ``schedule`` is a
    ``WarmStartConfig`` or ``CriticModelConfig``. Returns each step's loss.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < schedule.warmup_steps:
            return (step + 1) / schedule.warmup_steps
        progress = (step - schedule.warmup_steps) / max(1, schedule.steps - schedule.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses = []
    bar = tqdm(range(schedule.steps), desc=desc, disable=None if show_progress else True, mininterval=2.0)
    for step in bar:
        pairs = [make_pair(rng) for _ in range(schedule.batch_size)]
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p, _ in pairs]
        completion_ids = [tokenizer(c, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for _, c in pairs]
        num_targets = sum(len(c) for c in completion_ids)
        if prompt_weight:
            num_targets += prompt_weight * sum(len(p) - 1 for p in prompt_ids)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        # Short solve transcripts and long refinement transcripts go in separate forwards: no padding waste.
        for micro in token_budget_microbatches([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)],
                                               schedule.max_tokens_per_microbatch):
            input_ids, attention_mask, completion_mask = pad_sequences(
                [prompt_ids[i] for i in micro], [completion_ids[i] for i in micro], tokenizer.pad_token_id)
            logits = sequence_logits(model, input_ids, attention_mask)          # (b, T-1, V)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
            weights = completion_mask[:, 1:]
            if prompt_weight:       # the prompt's tokens: attended, not completion
                weights = weights + prompt_weight * (attention_mask[:, 1:] - completion_mask[:, 1:])
            loss = (nll * weights).sum() / num_targets
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(total)
        bar.set_postfix(loss=f"{total:.4f}", refresh=False)
        if show_progress and (step + 1) % 100 == 0:
            tqdm.write(f"{desc} step {step + 1}/{schedule.steps} | loss {total:.4f}")
    return losses


def warm_start(cfg: Config, out_dir: Path, show_progress: bool = True) -> Path:
    """Train the policy from scratch and save model + tokenizer to ``out_dir`` (HF format)."""
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.warmstart, tokenizer, cfg.seed)
    maker = TranscriptMaker(cfg, ProblemSource(cfg.task, cfg.seed))
    rng = random.Random(f"{cfg.seed}/warmstart")
    train_supervised(model, tokenizer, maker.pair, rng, cfg.warmstart, "warm start", show_progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def critic_model_critic(cfg: Config) -> CriticConfig:
    """The critic settings the critic model's prompts are rendered with: the config's, as a model
    backend of its own (``hf``: always shown the reference) sees them."""
    return dataclasses.replace(cfg.critic, backend="hf")


def critic_tokenizer():
    """The char tokenizer with the critic model's chat template and response template."""
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = CRITIC_CHAT_TEMPLATE
    tokenizer.response_template = CRITIC_RESPONSE_TEMPLATE
    return tokenizer


def warm_start_critic(cfg: Config, out_dir: Path, show_progress: bool = True) -> dict:
    """Train the critic model from scratch (``critic_model``) and save it with its tokenizer and
    chat template to ``out_dir`` (HF format); returns the losses and the seconds it took."""
    start = time.perf_counter()
    cm = cfg.critic_model
    tokenizer = critic_tokenizer()
    model = build_tiny_model(cm, tokenizer, cfg.seed)
    maker = CriticModelTranscripts(cfg, ProblemSource(cfg.task, cfg.seed), tokenizer)
    rng = random.Random(f"{cfg.seed}/critic_model")
    losses = train_supervised(model, tokenizer, maker.pair, rng, cm, "critic model", show_progress, cm.prompt_loss_weight)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"steps": cm.steps, "train_seconds": time.perf_counter() - start, "final_loss": losses[-1], "losses": losses}
