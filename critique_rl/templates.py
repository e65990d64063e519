"""Prompt templates: Jinja files under prompts/, rendered in a sandbox with StrictUndefined.

Values (questions, attempts, critiques) are inserted as data, never evaluated as template
code, so an attempt containing ``{{ x }}`` appears literally. A missing variable, a syntax
error, an unsafe attribute access or any error of the template's code (``{{ 1/0 }}``, a missing
``{% include %}``, ``range(10**7)``) stops with one line: the template's path, line and the cause.

    >>> t = load_template("arithmetic/solve.jinja")
    >>> t.render(question="1+2+3")
    '1+2+3\\n'
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

PROMPTS_PACKAGE = "critique_rl.prompts"


class TemplateError(ValueError):
    """A template cannot be found, parsed or rendered; the message says where and why."""


def packaged_prompts_dir() -> Path:
    return Path(str(resources.files(PROMPTS_PACKAGE)))


def resolve_template_path(name: str) -> Path:
    """A path as given (absolute or relative to the working directory), else a packaged template."""
    given = Path(name)
    if given.is_file():
        return given.resolve()
    packaged = packaged_prompts_dir() / name
    if packaged.is_file():
        return packaged
    raise TemplateError(f"template {name!r} not found: neither a file nor a packaged template under {packaged_prompts_dir()}")


def _environment(directory: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _where(path: Path) -> str:
    """``file:line`` of the template code that raised the exception being handled: the innermost
    frame Jinja rewrote to point into a template (an included one, too), else ``path``."""
    tb, where = sys.exc_info()[2], str(path)
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:     # jinja2.debug.fake_traceback's frames
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


class PromptTemplate:
    def __init__(self, name: str):
        self.path = resolve_template_path(name)
        env = _environment(self.path.parent)
        source = self.path.read_text()
        try:
            self.variables = jinja2.meta.find_undeclared_variables(env.parse(source))
            self._template = env.get_template(self.path.name)
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{self.path}:{err.lineno}: template syntax error: {err.message}") from None
        self._lines = source.splitlines()

    def _line_of(self, variable: str) -> int | None:
        return next((i + 1 for i, text in enumerate(self._lines) if variable in text), None)

    def render(self, **values: Any) -> str:
        missing = sorted(self.variables - values.keys())
        if missing:
            var = missing[0]
            raise TemplateError(
                f"{self.path}:{self._line_of(var)}: template variable {var!r} is not provided; "
                f"this template receives: {', '.join(sorted(values)) or 'nothing'}")
        try:
            return self._template.render(**values)
        except SecurityError as err:
            raise TemplateError(f"{_where(self.path)}: unsafe operation refused by the sandbox: {err}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"{_where(self.path)}: undefined value: {err.message}; "
                                f"this template receives: {', '.join(sorted(values))}") from None
        except jinja2.TemplateSyntaxError as err:        # in a template included at render time
            raise TemplateError(f"{err.filename}:{err.lineno}: template syntax error: {err.message}") from None
        except jinja2.TemplateNotFound as err:
            raise TemplateError(f"{_where(self.path)}: template {err.name!r} not found in {self.path.parent}") from None
        except Exception as err:  # noqa: BLE001 - whatever template code raises ({{ 1/0 }}, range(10**7)) is its error
            raise TemplateError(f"{_where(self.path)}: {type(err).__name__}: {' '.join(str(err).split())}") from None

    def __repr__(self) -> str:
        return f"PromptTemplate({str(self.path)!r})"


def load_template(name: str) -> PromptTemplate:
    return PromptTemplate(name)


class PolicyPrompts:
    """What the policy reads: the solve and refine templates rendered, then, for chat models, put
    in the tokenizer's chat template as one user message (after an optional system message).

    The refinement is trained under ``solve(question)``, the plain question in the same wrapping,
    so it sits where an answer to the question sits.
    """

    def __init__(self, cfg, tokenizer):   # cfg: config.PromptsConfig
        self.solve_template = load_template(cfg.solve)
        self.refine_template = load_template(cfg.refine)
        self.system = load_template(cfg.system).render() if cfg.system else ""
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if cfg.chat_template == "on" and not has_chat:
            raise TemplateError("prompts.chat_template = on, but the policy's tokenizer has no chat template; "
                                "use auto or off for a base model")
        self.chat = has_chat and cfg.chat_template != "off"
        self.tokenizer = tokenizer

    def wrap(self, text: str) -> str:
        """``text`` as the policy's input: the chat template with the assistant turn opened, or as is."""
        if not self.chat:
            return text
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def solve(self, question: str) -> str:
        return self.wrap(self.solve_template.render(question=question))

    def refine(self, question: str, attempt: str, critique: str) -> str:
        return self.wrap(self.refine_template.render(question=question, attempt=attempt, critique=critique))
