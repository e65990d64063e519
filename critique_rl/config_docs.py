"""The config reference in Markdown, generated from the dataclasses of ``critique_rl/config.py``.

One table per config section (key, type with its declared range, default, description), under a
heading taken from the section's help. ``critique-rl config reference`` prints it; ``--write
README.md`` replaces the block between the two markers below, and ``tests/test_docs.py`` fails
when that block differs from what the schema generates.

    >>> print(format_type(typing.Literal["a", "b"]), format_default(2e-4), format_default(""))
    `a` \\| `b` `0.0002` `""`
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Literal

from critique_rl.config import Config, ConfigError, value_range

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
REGENERATE = ".venv/bin/critique-rl config reference --write README.md"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped, and outside `code` spans
    ``<`` escaped (GitHub drops ``<task>`` as an unknown HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def format_type(annotation: Any) -> str:
    """Literal choices as `a` | `b`; other types by name (int, float, bool, str, list[str], ...)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{c}`" for c in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(format_type(a).strip("`") for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation)).replace("|", "\\|")


def format_default(value: Any) -> str:
    """The default as it is written in a YAML config."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = json.dumps(value, default=str)
    return f"`{_cell(text)}`"


def _rows(obj: Any, prefix: str) -> tuple[list[str], list[tuple[str, Any, str]]]:
    """Table rows of the scalar fields of ``obj`` and the (dotted name, instance, help) of its sub-sections."""
    hints = typing.get_type_hints(type(obj))
    rows, sections = [], []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(value):
            sections.append((f"{prefix}{f.name}", value, help_text))
        else:
            kind = " ".join(filter(None, [format_type(hints[f.name]), _cell(value_range(f.metadata))]))
            rows.append(f"| `{prefix}{f.name}` | {kind} | {format_default(value)} | {_cell(help_text)} |")
    return rows, sections


def _table(rows: list[str]) -> list[str]:
    return ["| key | type | default | description |", "|---|---|---|---|", *rows]


def config_reference(root: Any = None) -> str:
    """The Markdown reference of every config field, in declaration order; ends with a newline."""
    root = Config() if root is None else root
    lines = [
        f"Generated from `critique_rl/config.py`; do not edit by hand, regenerate with `{REGENERATE}`.",
        "Every key can be set in a YAML config (`section: {key: value}`) or on the command line as a",
        "dotted override (`section.key=value`).",
    ]
    rows, sections = _rows(root, "")
    if rows:
        lines += ["", "### Top level", "", *_table(rows)]
    while sections:
        name, obj, help_text = sections.pop(0)
        rows, children = _rows(obj, f"{name}.")
        heading = f"### `{name}`" + (f" — {_cell(help_text).rstrip('.')}" if help_text else "")
        lines += ["", heading] + (["", *_table(rows)] if rows else [])
        sections = children + sections       # nested sections right after their parent
    return "\n".join(lines) + "\n"


def _block(reference: str) -> str:
    return f"{START}\n\n{reference}\n{END}"


def current_block(text: str, where: str = "README.md") -> str:
    """The marked block of ``text``, markers included; ConfigError when the markers are missing or out of order."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ConfigError(f"{where}: no config reference block; add the lines {START} and {END} where it belongs")
    return text[start:end + len(END)]


def expected_block() -> str:
    return _block(config_reference())


def write_reference(path: Path) -> bool:
    """Replace the marked block of ``path`` with the generated reference; True when the file changed."""
    text = Path(path).read_text()
    new = text.replace(current_block(text, str(path)), expected_block(), 1)
    if new != text:
        Path(path).write_text(new)
    return new != text
