"""`critique-rl inspect`: one logged group of a real tiny Critique-GRPO run, rendered; its numbers
are those of samples.jsonl; the shaping summary by hand; the errors of an absent step or prompt."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from critique_rl import algos
from critique_rl.cli import main
from critique_rl.inspect_run import (
    BUCKET_EDGES,
    format_prob,
    prob_bucket,
    shaping_summary,
    shaping_weight,
    token_probs,
)

CELL = re.compile(r'"((?:[^"\\]|\\.)*)" (\d\.\d{3}|\de-\d\d)(\*?)')


@pytest.fixture
def run_dir(train_short) -> Path:
    # The random tiny model never answers right, so every group is refined; refinement_fallback=random
    # still lets one (wrong) refinement join each group, with its tokens and log-probs logged.
    return train_short("refine.refinement_fallback=random")


def logged(run_dir: Path, step: int, prompt: int) -> dict:
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        g = json.loads(line)
        if g["step"] == step and g["prompt"] == prompt:
            return g
    raise AssertionError(f"step {step} prompt {prompt} not logged")


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch):
    """Colours decided by the flag and the output alone, whatever the CI sets."""
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def inspect(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_shows_a_real_group_and_the_numbers_of_samples_jsonl(run_dir, capsys):
    group = logged(run_dir, 2, 0)
    [chosen] = [r for r in group["refinements"] if r["chosen"]]
    assert chosen["tokens"] and len(chosen["tokens"]) == len(chosen["token_logprobs"])

    code, out, err = inspect(capsys, str(run_dir), "--step", "2", "--prompt", "0")
    assert code == 0, err
    assert "\x1b[" not in out                       # not a terminal: plain text
    assert "step 2 · prompt 0" in out
    assert group["question"] in out and str(group["answer"]) in out
    for a in group["attempts"]:
        assert all(chunk in out for chunk in a["text"].split())
    assert re.search(r"\b0\s+│\s+0\s+│\s+[+-]\d\.\d{3}\s+│\s+\d\.\d{3}", out)   # attempt 0: reward, advantage, mean p
    assert chosen["critique"] in out
    assert f"chosen, advantage {chosen['advantage']:+.3f}" in out
    assert out.count("not chosen (not trained)") == len(group["refinements"]) - 1

    # The token cells of the chosen refinement: its tokens, in order, with p = exp(token_logprob).
    cells = CELL.findall(out)
    assert len(cells) == len(chosen["tokens"])
    gamma = 0.1
    for (token, p, mark), logged_token, logp in zip(cells, chosen["tokens"], chosen["token_logprobs"]):
        assert json.loads(f'"{token}"') == logged_token
        assert float(p) == pytest.approx(math.exp(logp), abs=5e-4, rel=0.05)
        assert (mark == "*") == (math.exp(logp) < gamma)
    s = shaping_summary(token_probs(chosen["token_logprobs"]), gamma)
    assert (f"shaping γ = 0.1: {s.tokens} tokens, mean p {s.mean_p:.3f}, mean f(p) {s.mean_f:.3f}, "
            f"f(p) < 0.5 on {s.shaped}/{s.tokens}") in " ".join(out.split())
    assert "legend:" in out


def test_defaults_list_attempt_tokens_color_and_errors(run_dir, capsys, monkeypatch):
    # Defaults: the last logged step, group 0.
    code, out, _ = inspect(capsys, str(run_dir))
    assert code == 0 and "step 2 · prompt 0" in out

    code, out, _ = inspect(capsys, str(run_dir), "--list")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4           # 2 steps × train.samples_per_step = 2
    assert lines[0].startswith("step 1 prompt 0 | ") and "refinements" in lines[0] and "chosen: of attempt" in lines[0]

    group = logged(run_dir, 1, 1)
    code, out, _ = inspect(capsys, str(run_dir), "--step", "1", "--prompt", "1", "--attempt-tokens")
    chosen = [r for r in group["refinements"] if r["chosen"]]
    assert len(CELL.findall(out)) == sum(len(a["tokens"]) for a in group["attempts"]) + sum(len(r["tokens"]) for r in chosen)

    code, out, _ = inspect(capsys, str(run_dir), "--color", "always")
    assert code == 0 and "\x1b[" in out
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, _ = inspect(capsys, str(run_dir), "--color", "always")
    assert code == 0 and re.search(r"\x1b\[(1;)?31m", out)     # red tokens: the flag wins over NO_COLOR

    code, _, err = inspect(capsys, str(run_dir), "--step", "7")
    assert code == 2 and "step 7 is not in samples.jsonl; logged steps: 1-2" in err
    code, _, err = inspect(capsys, str(run_dir), "--step", "1", "--prompt", "5")
    assert code == 2 and "step 1 has no logged prompt 5; logged prompts: 0-1" in err
    code, _, err = inspect(capsys, str(run_dir / "nowhere"))
    assert code == 2 and "no samples.jsonl" in err


def test_the_command_line_prints_no_ansi_codes_when_piped(run_dir):
    result = subprocess.run([sys.executable, "-m", "critique_rl.cli", "inspect", str(run_dir), "--prompt", "1"],
                            capture_output=True, text=True, env={"PATH": "", "TERM": "xterm-256color"})
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "shaping γ = 0.1" in result.stdout


def test_shaping_summary_by_hand():
    # f(0.9) = 0.9/1.0 = 0.9; f(0.1) = 0.1/0.2 = 0.5 (not below 0.5); f(0.01) = 0.01/0.11 = 0.0909...;
    # f(0.5) = 0.5/0.6 = 0.8333...; mean p = 1.51/4 = 0.3775; mean f = 2.3242424/4 = 0.5810606.
    s = shaping_summary([0.9, 0.1, 0.01, 0.5], 0.1)
    assert s.tokens == 4
    assert s.mean_p == pytest.approx(0.3775)
    assert s.mean_f == pytest.approx(0.5810606, abs=1e-7)
    assert s.shaped == 1 and s.frac_shaped == 0.25
    # γ = 0.5: f = 0.6429, 0.1667, 0.0196, 0.5 -> two below 0.5.
    assert shaping_summary([0.9, 0.1, 0.01, 0.5], 0.5).shaped == 2
    assert shaping_summary([], 0.1).tokens == 0


def test_the_pure_parts_agree_with_the_loss():
    probs = [0.0, 0.01, 0.1, 0.5, 1.0]
    expected = algos.shaping_weight(torch.tensor(probs, dtype=torch.float64), 0.1).tolist()
    assert [shaping_weight(p, 0.1) for p in probs] == pytest.approx(expected)
    assert token_probs([0.0, math.log(0.25), -100.0]) == pytest.approx([1.0, 0.25, math.exp(-100.0)])
    assert [prob_bucket(p) for p in (0.0, 0.099, *BUCKET_EDGES, 0.999, 1.0)] == [0, 0, 1, 2, 3, 4, 4, 4]
    assert [format_prob(p) for p in (0.9996, 0.0005, 0.00049, 3.2e-7)] == ["1.000", "0.001", "5e-04", "3e-07"]
