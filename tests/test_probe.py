"""critique-rl probe: selection of persistent failures, the table and JSON, and a run end to end."""

import json

import pytest

from critique_rl.config import ConfigError, load_config
from critique_rl.probe import (
    JSON_PREFIX,
    KINDS,
    critic_from_file,
    critic_labels,
    format_table,
    json_line,
    kind_config,
    persistent_failures,
    probe_kinds,
    probe_row,
)


def test_persistent_failures_are_the_first_candidates_with_no_correct_sample():
    rewards = [[0.0, 0.0], [0.0, 1.0], [], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert persistent_failures(rewards, 10) == [0, 3, 5]          # no samples: not a failure
    assert persistent_failures(rewards, 2) == [0, 3]
    assert persistent_failures(rewards, 0) == []
    assert persistent_failures([[0.5]], 1) == []                  # any positive reward is a success


def test_rows_count_attempts_solved_and_refinements():
    row = probe_row("rule", "rule", "cot", [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]], None, 2)
    assert row == {"critic": "rule", "backend": "rule", "kind": "cot", "attempts": 3, "solved": 2, "share": 2 / 3,
                   "refinements": 6, "correct": 3, "fallbacks": None, "noised": 2}
    empty = probe_row("hf", "hf", "cot", [], 0)
    assert (empty["attempts"], empty["solved"], empty["share"]) == (0, 0, None)


def result(refinements=1, noised=None):
    rows = [probe_row("rule", "rule", kind, [[1.0] * refinements, [0.0] * refinements], None, noised) for kind in KINDS]
    rows.append(probe_row("critic_hf", "hf", "cot", [[0.0] * refinements, [0.0] * refinements], 1))
    return {"model": "m", "seed": 0, "k": 8, "candidates": 10, "problems": 2, "requested_problems": 64,
            "refinements_per_attempt": refinements, "temperature": 1.0, "rows": rows}


def test_table_columns_and_the_json_line():
    table = format_table(result())
    lines = table.splitlines()
    assert lines[0].startswith("persistent failures: 2 of 10 candidates had 0 of 8 correct (asked for 64)")
    assert lines[2] == "| critic | backend | kind | attempts | solved | share solved | fallbacks |"
    assert lines[4] == "| rule | rule | indicative | 2 | 1 | 0.50 | — |"
    assert lines[-1] == "| critic_hf | hf | cot | 2 | 0 | 0.00 | 1 |"
    many = format_table(result(refinements=3, noised=1)).splitlines()
    assert many[2].endswith("| correct refinements | fallbacks | noised |")
    assert many[4] == "| rule | rule | indicative | 2 | 1 | 0.50 | 3/6 | — | 1 |"
    assert many[-1].endswith("| 0/6 | 1 | — |")
    line = json_line(result())
    assert line.startswith(JSON_PREFIX) and "\n" not in line
    assert json.loads(line[len(JSON_PREFIX):]) == result()


def test_critic_files_labels_and_kinds(tmp_path):
    cfg = load_config("tiny")
    path = tmp_path / "noisy.yaml"
    path.write_text("critic:\n  noise: 0.3\n  noise_verdict: flip\ntrain:\n  steps: 1\n")
    critic = critic_from_file(cfg, str(path))
    assert (critic.backend, critic.noise, critic.noise_verdict) == ("rule", 0.3, "flip")
    assert cfg.critic.noise == 0.0                                 # the base config is left alone
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 1\n")
    with pytest.raises(ConfigError, match="critic: section"):
        critic_from_file(cfg, str(bad))
    bad.write_text("critic:\n  nosie: 1\n")
    with pytest.raises(ConfigError, match="critic.nosie"):
        critic_from_file(cfg, str(bad))
    with pytest.raises(ConfigError, match="no such file"):
        critic_from_file(cfg, str(tmp_path / "missing.yaml"))
    assert critic_labels(["a/x.yaml", "b/x.yaml", "y.yml"]) == ["x", "x#2", "y"]
    own = kind_config(load_config("tiny", ["critic.template=my.jinja"]).critic, "indicative")
    assert (own.critique_type, own.template) == ("indicative", "")
    assert kind_config(load_config("tiny", ["critic.template=my.jinja"]).critic, "cot").template == "my.jinja"
    assert probe_kinds(cfg.critic, "math") == ("indicative", "ground_truth")
    assert probe_kinds(cfg.critic, "arithmetic") == KINDS


def test_probe_end_to_end_on_the_tiny_warm_start(warm_policy, tmp_path, capsys):
    from critique_rl.cli import build_parser

    self_critic = tmp_path / "self.yaml"
    self_critic.write_text("critic:\n  backend: self\n  api: completions\n  max_tokens: 8\n  max_verdict_retries: 0\n")
    noisy = tmp_path / "noisy.yaml"
    noisy.write_text("critic:\n  noise: 0.5\n")
    args = build_parser().parse_args(["probe", "--config", "tiny", "--model", str(warm_policy), "--problems", "4",
                                      "--k", "2", "--critic", str(noisy), "--critic", str(self_critic)])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(JSON_PREFIX)
    found = json.loads(out[-1][len(JSON_PREFIX):])
    assert found["k"] == 2 and 0 < found["problems"] <= 4 and found["candidates"] >= found["problems"]
    rows = {(r["critic"], r["kind"]): r for r in found["rows"]}
    assert set(rows) == {(c, k) for c in ("noisy", "self") for k in KINDS}
    for r in rows.values():
        assert r["attempts"] == r["refinements"] == found["problems"] and 0 <= r["solved"] <= r["attempts"]
        assert r["correct"] == r["solved"] and r["share"] == r["solved"] / r["attempts"]
    assert rows["noisy", "cot"]["noised"] <= found["problems"] and rows["noisy", "cot"]["fallbacks"] is None
    assert rows["self", "indicative"]["fallbacks"] == 0 and 0 <= rows["self", "cot"]["fallbacks"] <= found["problems"]
    assert "| noisy | rule | cot |" in "\n".join(out)

    args = build_parser().parse_args(["probe", "--config", "tiny", "--model", str(warm_policy), "--problems", "2",
                                      "--k", "1", "--refinements", "2", "--json"])
    assert args.func(args) == 0
    [line] = capsys.readouterr().out.splitlines()
    plain = json.loads(line)
    assert [(r["critic"], r["kind"]) for r in plain["rows"]] == [("rule", k) for k in KINDS]
    assert all(r["refinements"] == 2 * r["attempts"] and r["solved"] <= r["attempts"] for r in plain["rows"])
