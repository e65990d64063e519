"""Prompt templates: literal insertion, strict variables, sandbox, clear errors."""

import pytest

from critique_rl.templates import TemplateError, load_template


def test_attempt_with_template_syntax_is_inserted_literally():
    refine = load_template("arithmetic/refine.jinja")
    text = refine.render(question="1+2+3", attempt="{{ question }} {% if %}", critique="step 1 {{ 7*7 }}")
    assert text == "1+2+3\ntry {{ question }} {% if %}\nstep 1 {{ 7*7 }}\nfix\n"


def test_missing_variable_names_template_line_and_variable():
    refine = load_template("arithmetic/refine.jinja")
    with pytest.raises(TemplateError) as err:
        refine.render(question="1+2+3", attempt="x")
    message = str(err.value)
    assert "refine.jinja:3" in message and "'critique'" in message and "receives: attempt, question" in message


def test_misspelled_attribute_inside_a_loop_is_reported_with_its_line(tmp_path):
    path = tmp_path / "critique.jinja"
    path.write_text("header\n{% for s in checked %}{{ s.indx }}{% endfor %}\n")
    with pytest.raises(TemplateError, match=r"critique.jinja:2: undefined value: .*indx"):
        load_template(str(path)).render(checked=[{"index": 1}])


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jinja"
    path.write_text("ok\n{% if x %}\n")
    with pytest.raises(TemplateError, match=r"bad.jinja:\d+: template syntax error"):
        load_template(str(path))


def test_sandbox_refuses_python_internals(tmp_path):
    path = tmp_path / "evil.jinja"
    path.write_text("{{ question.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError, match="evil.jinja:1: (unsafe operation|undefined value)"):
        load_template(str(path)).render(question="x")


def test_missing_template_file_is_a_clear_error():
    with pytest.raises(TemplateError, match="'nope/solve.jinja' not found"):
        load_template("nope/solve.jinja")
