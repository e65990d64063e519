"""`critique-rl inspect RUN_DIR`: one logged group of a run, as the algorithm saw it.

Reads ``samples.jsonl`` (the groups each step logged, with what the update saw: rewards,
advantages, decoded tokens and their log-probs under the policy at training time) and the run's
``config.yaml`` (γ of the policy shaping, the sampling temperature). The numbers are pure
functions below; rendering (``rich``) is kept apart and degrades to plain text when the output
is not a terminal.

    >>> [round(p, 3) for p in token_probs([0.0, -2.302585])]
    [1.0, 0.1]
    >>> shaping_weight(0.1, 0.1)
    0.5
    >>> format_ranges([1, 2, 3, 5, 7, 8])
    '1-3, 5, 7-8'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from critique_rl.config import ConfigError

# Colour buckets of a token's probability p: [0, 0.1), [0.1, 0.3), [0.3, 0.6), [0.6, 0.9), [0.9, 1].
BUCKET_EDGES = (0.1, 0.3, 0.6, 0.9)
BUCKET_STYLES = ("red", "dark_orange", "yellow", "green_yellow", "green")
BUCKET_NAMES = ("red", "orange", "yellow", "light green", "green")     # named in the legend, for plain text
SHAPED_MARK = "*"          # after a token's p when f(p) < 0.5, i.e. p < γ
ATTEMPT_CHARS = 500        # attempt texts longer than this are cut in the table unless --full


# ---------------------------------------------------------------------------- pure parts
def token_probs(logprobs: Sequence[float]) -> list[float]:
    """Probabilities of the logged tokens: exp of their log-probs."""
    return [math.exp(x) for x in logprobs]


def format_prob(p: float) -> str:
    """p with 3 decimals; below 0.0005 (which would read 0.000) in scientific notation.

    >>> format_prob(0.1234), format_prob(1.0), format_prob(0.00003)
    ('0.123', '1.000', '3e-05')
    """
    return f"{p:.3f}" if p >= 0.0005 else f"{p:.0e}"


def shaping_weight(p: float, gamma: float) -> float:
    """Critique-GRPO policy shaping f(p) = p / (p + γ), as in ``algos.shaping_weight``."""
    return p / (p + gamma)


@dataclass(frozen=True)
class ShapingSummary:
    tokens: int
    mean_p: float
    mean_f: float
    shaped: int                 # tokens with f(p) < 0.5 (p < γ)

    @property
    def frac_shaped(self) -> float:
        return self.shaped / self.tokens if self.tokens else 0.0


def shaping_summary(probs: Sequence[float], gamma: float) -> ShapingSummary:
    """Mean p, mean f(p) and the number of tokens with f(p) < 0.5 over one completion.

    >>> s = shaping_summary([0.9, 0.1, 0.01], 0.1)
    >>> s.shaped, round(s.mean_f, 4)
    (1, 0.497)
    """
    if not probs:
        return ShapingSummary(0, 0.0, 0.0, 0)
    weights = [shaping_weight(p, gamma) for p in probs]
    return ShapingSummary(len(probs), sum(probs) / len(probs), sum(weights) / len(weights),
                          sum(w < 0.5 for w in weights))


def prob_bucket(p: float) -> int:
    """Index of p's colour bucket, 0 (lowest, red) to len(BUCKET_EDGES) (highest, green).

    >>> [prob_bucket(p) for p in (0.0, 0.05, 0.1, 0.45, 0.6, 0.95, 1.0)]
    [0, 0, 1, 2, 3, 4, 4]
    """
    return sum(p >= edge for edge in BUCKET_EDGES)


def bucket_label(i: int) -> str:
    lo = 0.0 if i == 0 else BUCKET_EDGES[i - 1]
    hi = 1.0 if i == len(BUCKET_EDGES) else BUCKET_EDGES[i]
    return f"{lo:g}≤p≤{hi:g}" if i == len(BUCKET_EDGES) else f"{lo:g}≤p<{hi:g}"


def show_token(token: str) -> str:
    """A token as a quoted, escaped string: spaces visible, newlines as \\n."""
    return json.dumps(token, ensure_ascii=False)


def format_ranges(values: Sequence[int]) -> str:
    values = sorted(set(values))
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def load_samples(run_dir: Path) -> list[dict]:
    """Every logged group of a run (a line torn by a crash is skipped)."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no samples.jsonl; is this a run directory?")
    groups = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            groups.append(record)
    if not groups:
        raise ValueError(f"{path} holds no logged group yet")
    return groups


def select_group(groups: list[dict], step: int | None, prompt: int) -> dict:
    """The group logged at ``step`` (default: the last logged step) under index ``prompt``."""
    steps = sorted({g["step"] for g in groups})
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"step {step} is not in samples.jsonl; logged steps: {format_ranges(steps)}")
    at_step = {g.get("prompt", 0): g for g in groups if g["step"] == step}
    if prompt not in at_step:
        raise ValueError(f"step {step} has no logged prompt {prompt}; logged prompts: {format_ranges(list(at_step))}")
    return at_step[prompt]


@dataclass(frozen=True)
class RunSettings:
    method: str
    gamma: float
    temperature: float
    scale_rewards: str
    refine_trigger: str


def run_settings(run_dir: Path) -> RunSettings:
    """What the rendering needs from the run's config.yaml (defaults of the config where a key is absent)."""
    from critique_rl.config import Config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; is this a run directory?")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    d = Config()

    def get(section: str, key: str, default):
        value = (raw.get(section) or {}).get(key, default)
        return default if value is None else value

    return RunSettings(str(raw.get("method", d.method)), float(get("loss", "gamma", d.loss.gamma)),
                       float(get("rollout", "temperature", d.rollout.temperature)),
                       str(get("loss", "scale_rewards", d.loss.scale_rewards)),
                       str(get("refine", "refine_trigger", d.refine.refine_trigger)))


def _num(x) -> str:
    return "—" if x is None else f"{x:g}"


def _adv(x) -> str:
    return "—" if x is None else f"{x:+.3f}"


def group_line(group: dict) -> str:
    """One line of `inspect --list`: step, prompt, question, answer, rewards, refinements.

    >>> group_line({"step": 3, "prompt": 1, "question": "1+2+3", "answer": 6,
    ...             "attempts": [{"reward": 0.0}, {"reward": 1.0}]})
    'step 3 prompt 1 | 1+2+3 -> 6 | rewards 0 1 | no refinement'
    """
    question = " ".join(str(group.get("question", "")).split())
    if len(question) > 60:
        question = question[:57] + "..."
    rewards = " ".join(_num(a.get("reward")) for a in group.get("attempts", []))
    refinements = group.get("refinements")
    if refinements is None:
        refined = "no refinement"
    else:
        rewards_r = " ".join(_num(r.get("reward")) for r in refinements)
        chosen = ", ".join(f"of attempt {r.get('attempt_index')} (reward {_num(r.get('reward'))})" for r in refinements if r.get("chosen"))
        refined = f"{len(refinements)} refinements, rewards {rewards_r}, chosen: {chosen or 'none'}"
    return f"step {group['step']} prompt {group.get('prompt', 0)} | {question} -> {group.get('answer')} | rewards {rewards} | {refined}"


# ---------------------------------------------------------------------------- rendering
def make_console(color: str = "auto"):
    """A rich console on stdout: colours on a terminal only (and NO_COLOR respected), unless forced."""
    from rich.console import Console

    common = dict(highlight=False, markup=False, emoji=False)
    if color == "always":       # the flag wins over NO_COLOR and a dumb TERM
        console = Console(force_terminal=True, no_color=False, **common)
        return console if console.color_system else Console(force_terminal=True, no_color=False,
                                                            color_system="standard", **common)
    if color == "never":
        return Console(color_system=None, force_terminal=False, **common)
    return Console(**common)


def token_cells(tokens: Sequence[str], probs: Sequence[float], gamma: float | None):
    """One ``"token" p`` cell per token, styled by p's bucket; ``*`` marks f(p) < 0.5 when ``gamma`` is given."""
    from rich.text import Text

    cells = []
    for token, p in zip(tokens, probs):
        style = BUCKET_STYLES[prob_bucket(p)]
        cell = Text(show_token(token), style=f"bold {style}")
        cell.append(f" {format_prob(p)}", style=style)
        if gamma is not None and shaping_weight(p, gamma) < 0.5:
            cell.append(SHAPED_MARK, style=f"bold {style}")
        cells.append(cell)
    return cells


def pack(cells, width: int, indent: int = 2, gap: int = 2):
    """Lay cells out in lines of at most ``width`` columns, never splitting a cell."""
    from rich.text import Text

    lines, line, used = [], Text(" " * indent), indent
    for cell in cells:
        if used > indent and used + gap + cell.cell_len > width:
            lines.append(line)
            line, used = Text(" " * indent), indent
        if used > indent:
            line.append(" " * gap)
            used += gap
        line.append_text(cell)
        used += cell.cell_len
    if used > indent:
        lines.append(line)
    return lines


class GroupView:
    def __init__(self, console, settings: RunSettings, attempt_tokens: bool = False, full: bool = False):
        self.console = console
        self.settings = settings
        self.attempt_tokens = attempt_tokens
        self.full = full

    def print(self, *renderables) -> None:
        self.console.print(*renderables, soft_wrap=False)

    def fields(self, rows: list[tuple[str, object]]):
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, value in rows:
            grid.add_row(label, value if isinstance(value, Text) else Text(str(value)))
        return grid

    def tokens(self, record: dict, gamma: float | None, indent: int = 2) -> None:
        tokens, logprobs = record.get("tokens"), record.get("token_logprobs")
        if not tokens or logprobs is None:
            self.print(f"{' ' * indent}(no token log-probs logged for it)")
            return
        for line in pack(token_cells(tokens, token_probs(logprobs), gamma), self.console.width, indent):
            self.print(line)

    def render(self, run_dir: Path, group: dict, prompts_at_step: list[int]) -> None:
        from rich.padding import Padding
        from rich.rule import Rule
        from rich.table import Table
        from rich.text import Text

        s = self.settings
        step, prompt = group["step"], group.get("prompt", 0)
        self.print(Rule(Text(f"step {step} · prompt {prompt}", style="bold")))
        self.print(self.fields([
            ("run", f"{run_dir} · {s.method} · γ = {s.gamma:g} · T = {s.temperature:g} · "
                    f"logged prompts of step {step}: {format_ranges(prompts_at_step)}"),
            ("question", group.get("question", "")),
            ("answer", group.get("answer", "")),
        ]))

        attempts = group.get("attempts", [])
        rewards = [a.get("reward") for a in attempts if a.get("reward") is not None]
        mean = f", group mean reward {sum(rewards) / len(rewards):.3f}" if rewards else ""
        self.print(Text(f"\nattempts: {len(attempts)}{mean}; advantage as trained "
                        f"(loss.scale_rewards = {s.scale_rewards})", style="bold"))
        table = Table(show_edge=False, pad_edge=False, expand=False)
        for name, justify in (("#", "right"), ("reward", "right"), ("advantage", "right"), ("mean p", "right"), ("text", "left")):
            table.add_column(name, justify=justify, overflow="fold")
        for i, a in enumerate(attempts):
            probs = token_probs(a["token_logprobs"]) if a.get("token_logprobs") else []
            text = str(a.get("text", ""))
            if not self.full and len(text) > ATTEMPT_CHARS:
                text = text[:ATTEMPT_CHARS] + f"… (+{len(text) - ATTEMPT_CHARS} chars, --full shows all)"
            style = BUCKET_STYLES[prob_bucket(sum(probs) / len(probs))] if probs else ""
            table.add_row(str(i), _num(a.get("reward")), _adv(a.get("advantage")),
                          Text(f"{sum(probs) / len(probs):.3f}", style=style) if probs else "—", Text(text))
        self.print(table)
        if self.attempt_tokens:
            for i, a in enumerate(attempts):
                self.print(Text(f"attempt {i} tokens: p = π(token | question) at T = {s.temperature:g} "
                                f"(PPO-clipped loss, no shaping)", style="bold"))
                self.tokens(a, None)

        refinements = group.get("refinements")
        if refinements is None:
            why = ("a GRPO run: no critiques" if s.method != "critique_grpo"
                   else f"not refined: refine_trigger = {s.refine_trigger} did not fire for this group")
            self.print(Text(f"\n{why}", style="bold"))
        else:
            self.print(Text(f"\nrefinements: {len(refinements)}, "
                            f"{sum(bool(r.get('chosen')) for r in refinements)} chosen to join the group", style="bold"))
        for k, r in enumerate(refinements or []):
            chosen = bool(r.get("chosen"))
            head = f"refinement {k + 1}/{len(refinements)} · of attempt {r.get('attempt_index')} · reward {_num(r.get('reward'))} · "
            head += f"chosen, advantage {_adv(r.get('advantage'))}" if chosen else "not chosen (not trained)"
            self.print(Rule(Text(head, style="bold green" if chosen else "bold"), align="left", characters="·"))
            self.print(self.fields([("critique", r.get("critique", "")), ("refinement", r.get("text", ""))]))
            if not chosen:
                continue
            self.print(Padding(Text(f"tokens: p = π(token | plain question) at T = {s.temperature:g} (the critique "
                                    f"is not in the trained context); loss per token −A·f(p), f(p) = p/(p+γ)"), (0, 0, 0, 2)))
            self.tokens(r, s.gamma)
            if r.get("token_logprobs"):
                sm = shaping_summary(token_probs(r["token_logprobs"]), s.gamma)
                self.print(Padding(Text(f"shaping γ = {s.gamma:g}: {sm.tokens} tokens, mean p {sm.mean_p:.3f}, "
                                        f"mean f(p) {sm.mean_f:.3f}, f(p) < 0.5 on {sm.shaped}/{sm.tokens} "
                                        f"({sm.frac_shaped:.0%})", style="bold"), (0, 0, 0, 2)))
        self.legend()

    def legend(self) -> None:
        from rich.text import Text

        line = Text("\nlegend: ")
        for i, (style, name) in enumerate(zip(BUCKET_STYLES, BUCKET_NAMES)):
            line.append(f"{name} {bucket_label(i)}", style=f"bold {style}")
            line.append(", " if i < len(BUCKET_STYLES) - 1 else "")
        if self.settings.method != "critique_grpo":
            self.print(line)
            return
        line.append(", ")
        line.append(f"{SHAPED_MARK} f(p) < 0.5, i.e. p < γ = {self.settings.gamma:g}: policy shaping weighs the "
                    f"token's loss −A·f(p) at less than half of −A")
        self.print(line)


def inspect_run(run_dir: Path, step: int | None = None, prompt: int = 0, list_groups: bool = False,
                attempt_tokens: bool = False, full: bool = False, color: str = "auto", console=None) -> int:
    """Print one group (or, with ``list_groups``, one line per logged group); returns the exit code."""
    run_dir = Path(run_dir)
    groups = load_samples(run_dir)
    console = console or make_console(color)
    if list_groups:
        shown = [g for g in groups if step is None or g["step"] == step]
        if not shown:
            raise ValueError(f"step {step} is not in samples.jsonl; logged steps: {format_ranges([g['step'] for g in groups])}")
        for g in shown:
            console.print(group_line(g), soft_wrap=True)
        return 0
    settings = run_settings(run_dir)
    group = select_group(groups, step, prompt)
    prompts_at_step = [g.get("prompt", 0) for g in groups if g["step"] == group["step"]]
    GroupView(console, settings, attempt_tokens, full).render(run_dir, group, prompts_at_step)
    return 0
