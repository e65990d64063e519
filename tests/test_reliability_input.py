"""Bad input stops the real CLI before training with one message (exit 2, no traceback), blocking nothing."""

import pytest

BROKEN_TEMPLATES = {"syntax.jinja": "Q: {{ question }\n", "typo.jinja": "{{ question }}\ntry {{ atempt }}\n{{ critique }}\n"}


@pytest.mark.parametrize("args, message", [
    (["train.stpes=3"], "unknown key 'train.stpes' (did you mean train.steps?)"),
    (["train.steps=x"], "train.steps = 'x'; expected an integer"),
    (["train.save_every=0"], "train.save_every must be >= 1"),
    (["model.name_or_path=/nonexistent/model"], "no config.json there"),
    (["prompts.refine=missing.jinja"], "template 'missing.jinja' not found"),
    (["prompts.solve=syntax.jinja"], "syntax.jinja:1: template syntax error"),
    (["prompts.refine=typo.jinja"], "typo.jinja:2: template variable 'atempt' is not provided"),
])
def test_bad_input_stops_with_one_clear_message(cli, tmp_path, args, message):
    for name, text in BROKEN_TEMPLATES.items():
        (tmp_path / name).write_text(text)
    run = tmp_path / "run"
    result = cli.train(run, *args, check_rc=2)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (run / "metrics.jsonl").exists()          # what would make the next `train --out` refuse


def test_a_run_that_failed_at_model_load_does_not_block_the_next(cli, tmp_path):
    run = tmp_path / "run"
    cli.train(run, "model.name_or_path=/nonexistent/model", check_rc=2)
    cli.train(run, "train.steps=1")
    assert [r["step"] for r in cli.rows(run)] == [0, 1]


def test_malformed_yaml_and_a_run_dir_without_config(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    result = cli("train", "--config", str(bad), "--out", str(tmp_path / "r"), check_rc=2)
    assert "bad.yaml: malformed YAML" in result.stderr and "Traceback" not in result.stderr
    result = cli("train", "--resume", str(tmp_path), check_rc=2)
    assert "no config.yaml there" in result.stderr
