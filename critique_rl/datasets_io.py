"""Real training and evaluation sets: local JSONL / JSON / Parquet files or hub datasets, read
through HF ``datasets`` (JSONL line by line, here) and mapped to (question, answer) by
configuration, not by renaming files.

Where the answer comes from is part of the spec: a field (``answer_from: field``), the last
``\\boxed{}`` of a solution field (``boxed``), or the text after the last ``####`` of a worked
solution (``after_hashes``, GSM8K). An answer or solution field may hold a list (OlympiadBench's
``final_answer: ["3"]``): one item is taken as is, several are joined. A malformed row fails
loudly with file, 1-based row and field, or is skipped and counted with ``on_bad_row: skip``.

    >>> answer_text(["$x=1$", "$x=2$"]), solution_text(["Step 1.", "So x = 2."])
    ('$x=1$, $x=2$', 'Step 1.\\nSo x = 2.')
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import itertools
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from critique_rl.config import DatasetSpec  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

# Suffix -> the `datasets` builder that reads it (.jsonl: only for its suffix; _jsonl_rows reads it).
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# How long the hub probe waits: `datasets` itself retries an unreachable hub for ~25 s per call.
HUB_PROBE_TIMEOUT_S = 3.0
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DatasetError(ValueError):
    """A data file, hub dataset or row is unusable; the message names the file (and row and field)."""


class RowError(DatasetError):
    """One row is malformed (``on_bad_row: skip`` drops such rows); the message names file, row and field."""


class HubUnreachable(DatasetError):
    """A hub dataset was asked for and the hub cannot be reached (no network, or HF_HUB_OFFLINE)."""


def clip(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut after ``limit`` characters with its full length.

    >>> clip("short")
    "'short'"
    >>> clip(list(range(100)), limit=12)
    '[0, 1, 2, 3,... (390 characters)'
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (runs of whitespace become one space), cut after ``limit`` characters.

    >>> one_line("Traceback:\\n  File x\\n\\nValueError: bad")
    'Traceback: File x ValueError: bad'
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    row: int  # 1-based row in the file, so messages and sample logs point into the source
    source: str
    extra: dict[str, Any] = field(default_factory=dict)  # the row's other fields (id, level, worked solution ...)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (braces balanced, escaped braces skipped), else None.

    >>> last_boxed(r"so $x = \\boxed{\\frac{1}{2}}$, not \\boxed{\\{1\\}}")
    '\\\\{1\\\\}'
    >>> last_boxed("no box") is None
    True
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # \{ and \} are literal braces, not grouping
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{"):i]
        i += 1
    return None


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a string, a number or a list of them, got {type(value).__name__} {clip(value)}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def answer_text(value: Any) -> str:
    """An answer value as text: strings stripped, integral floats without '.0', the items of a
    list joined with ', ' (a one-item list is its item).

    >>> answer_text(27.0), answer_text(0.5), answer_text(" 025 "), answer_text(["3"])
    ('27', '0.5', '025', '3')
    """
    if isinstance(value, list):
        if not value:
            raise ValueError("empty list: expected at least one answer")
        return ", ".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def solution_text(value: Any) -> str:
    """A worked solution as text: a string as is, the strings of a list joined with newlines."""
    if isinstance(value, list):
        if not value:
            raise ValueError("empty list: expected at least one solution")
        if not all(isinstance(v, str) for v in value):
            raise TypeError(f"expected a solution string or a list of strings, got a list holding {clip(value)}")
        return "\n".join(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a solution string or a list of strings, got {type(value).__name__} {clip(value)}")
    return value


def _answer(spec: DatasetSpec, row: dict[str, Any]) -> tuple[str, str]:
    """(field read, answer) of one row; raises ValueError / TypeError naming what is wrong."""
    if spec.answer_from == "field":
        key = spec.answer_field
        value = row.get(key)
        if value is None:
            raise ValueError("missing or null")
        return key, answer_text(value)
    key = spec.solution_field
    solution = solution_text(row.get(key))
    if spec.answer_from == "boxed":
        boxed = last_boxed(solution)
        if boxed is None:
            raise ValueError(f"no \\boxed{{...}} in the solution {clip(solution)}")
        return key, boxed.strip()
    if "####" not in solution:
        raise ValueError(f"no '####' in the solution {clip(solution)}")
    return key, solution.rsplit("####", 1)[1].strip()


def _example(spec: DatasetSpec, row: dict[str, Any], number: int) -> Example:
    """One row as an Example; raises DatasetError naming source, row and field."""
    where = f"{spec.path}: row {number}"
    question = row.get(spec.question_field)
    if not isinstance(question, str) or not question.strip():
        raise RowError(f"{where}: field {spec.question_field!r}: expected a non-empty string, got {clip(question)}")
    try:
        key, answer = _answer(spec, row)
    except (TypeError, ValueError) as err:
        key = spec.answer_field if spec.answer_from == "field" else spec.solution_field
        raise RowError(f"{where}: field {key!r}: {err}") from None
    if not answer:
        raise RowError(f"{where}: field {key!r}: empty answer")
    # A worked solution stays in extra (reference for critiques); only the fields taken verbatim leave.
    taken = (spec.question_field, spec.answer_field if spec.answer_from == "field" else None)
    extra = {k: v for k, v in row.items() if k not in taken}
    if isinstance(extra.get(spec.solution_field), list):
        # Critics read the worked solution as text (the reference); a list of steps becomes one text.
        # An unusable list matters only when the answer comes from it, and _answer has checked that case.
        with contextlib.suppress(TypeError, ValueError):
            extra[spec.solution_field] = solution_text(extra[spec.solution_field])
    return Example(question=question, answer=answer, row=number, source=spec.name or spec.path, extra=extra)


def _root_message(err: BaseException) -> str:
    """The innermost cause's message: `datasets` wraps parse errors in a generic one."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return f"{type(err).__name__}: {err}"


def _is_blank(path: Path) -> bool:
    """Whether the file holds only whitespace (read until the first other byte)."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if chunk.strip():
                return False
    return True


def _jsonl_rows(spec: DatasetSpec, path: Path, head: int = 0) -> tuple[list[Any], list[str]]:
    """(rows, field names) of a JSONL file, read here rather than by `datasets` so that a line that is
    not a JSON object is one row's fault: a RowError in its place with ``on_bad_row: skip`` (counted
    with the other malformed rows), else raised. Rows are numbered like `datasets` numbers them
    (blank lines are not rows) and hold every field, None where absent, as `datasets` gives them."""
    rows: list[Any] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        lines = (line for line in f if line.strip())
        for number, line in enumerate(itertools.islice(lines, head or None), start=1):
            try:
                value = json.loads(line.rstrip("\r\n"))  # so that err.colno is the column in the file
                why = "" if isinstance(value, dict) else f"expected a JSON object, got {type(value).__name__}"
            except json.JSONDecodeError as err:
                why = f"not valid JSON ({err.msg} at column {err.colno})"
            if not why:
                rows.append(value)
                continue
            bad = RowError(f"{spec.path}: row {number}: {why}")
            if spec.on_bad_row == "error":
                raise bad
            rows.append(bad)
    columns = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row))
    if not columns:
        raise DatasetError(f"{spec.path}: no line is a JSON object with fields ({len(rows)} malformed, first: {rows[0]})")
    return [{k: row.get(k) for k in columns} if isinstance(row, dict) else row for row in rows], columns


def hub_unreachable() -> str | None:
    """Why the dataset hub cannot be reached from here, or None when it can (or when HF_HUB_OFFLINE
    is set: then `datasets` answers at once from its local cache or with an offline error).

    A TCP connect to the hub (or the HTTPS proxy) with a short timeout, once per process: without
    it an unreachable hub costs ~25 s of `datasets` retries per dataset.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    target = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return _unreachable(target)


@functools.lru_cache(maxsize=None)
def _unreachable(url: str) -> str | None:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"cannot connect to {host}:{port}: {one_line(str(err), 120)}"


def is_hub_id(value: str) -> bool:
    """Whether ``value`` has the shape of a hub dataset or model id (owner/name).

    >>> is_hub_id("openai/gsm8k"), is_hub_id("./data/x.jsonl"), is_hub_id("gsm8k")
    (True, False, False)
    """
    return bool(HUB_ID.match(value))


# A hub id ending like a file is a path typed without its folder: `model.safetensors`, `ws/config.json`.
FILE_SUFFIXES = {".json", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".yaml", ".yml"}


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` has the shape of a hub model id (``name`` or ``owner/name``), not of a path.

    Unlike a dataset id (``is_hub_id``), a model id may be one bare name, as transformers loads it.

    >>> [looks_like_hub_id(n) for n in ("Qwen/Qwen2.5-7B", "gpt2", "runs/typo/warmstart", "./ws", "~/ws", "ws/")]
    [True, True, False, False, False, False]
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return Path(name).suffix.lower() not in FILE_SUFFIXES


@contextlib.contextmanager
def _quiet_local(datasets: Any, local: bool):
    """No progress bars while a local file is read: "Generating split" for a file that takes a second
    is noise before the one line of a result or an error. Downloads keep theirs."""
    if not local or not datasets.is_progress_bar_enabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def load_rows(spec: DatasetSpec, head: int = 0) -> tuple[Any, list[str]]:
    """(rows, field names) of the spec's split: a `datasets.Dataset` (a list for a JSONL file, with a
    RowError in place of each line that is not a JSON object when ``on_bad_row`` is skip), or with
    ``head`` > 0 a list of its first ``head`` rows, streamed (nothing else read or downloaded). Clear
    errors for missing, unreadable or empty sources; HubUnreachable when a hub dataset cannot be fetched."""
    import datasets  # heavy import, only needed when real data is loaded

    if not spec.path:
        raise DatasetError("dataset spec has an empty path")
    path = Path(spec.path)
    builder = _BUILDERS.get(path.suffix)
    if builder is None and not path.exists():
        if not is_hub_id(spec.path):
            raise DatasetError(f"{spec.path}: no such file or folder, and not a hub dataset id (owner/name); "
                               f"a relative path is relative to the working directory {os.getcwd()}")
        reason = hub_unreachable()
        if reason:
            raise HubUnreachable(f"{spec.path}: the hub is unreachable ({reason})")
    try:
        if builder is not None:
            if not path.is_file():
                raise DatasetError(f"{spec.path}: data file does not exist")
            if _is_blank(path):
                raise DatasetError(f"{spec.path}: file has no rows")
            if path.suffix == ".jsonl":
                return _jsonl_rows(spec, path, head)
            args, kwargs = (builder,), dict(data_files={spec.split: str(path)}, split=spec.split)
        elif path.is_file():
            raise DatasetError(f"{spec.path}: unsupported file type; expected {', '.join(_BUILDERS)}, a folder or a hub id")
        else:  # a hub id, or a local folder that `datasets` knows how to read
            args, kwargs = (spec.path, spec.config or None), dict(split=spec.split)
        with _quiet_local(datasets, builder is not None):
            if head:
                rows = list(itertools.islice(datasets.load_dataset(*args, **kwargs, streaming=True), head))
                columns = list(dict.fromkeys(k for row in rows for k in row))
            else:
                rows = datasets.load_dataset(*args, **kwargs)
                columns = rows.column_names
    except DatasetError:
        raise
    except ConnectionError as err:  # `datasets` under HF_HUB_OFFLINE without a cached copy, or a hub gone mid-way
        raise HubUnreachable(f"{spec.path}: {one_line(str(err))}") from err  # its own text names the cause
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one clear message
        raise DatasetError(f"{spec.path}: could not load split {spec.split!r}: {one_line(_root_message(err))}") from err
    if len(rows) == 0:
        raise DatasetError(f"{spec.path}: file has no rows")
    return rows, columns


def examples_from_rows(spec: DatasetSpec, rows: Any, columns: list[str]) -> list[Example]:
    """``rows`` (from load_rows) mapped to Examples by ``spec``, in order."""
    needed = [spec.question_field, spec.answer_field if spec.answer_from == "field" else spec.solution_field]
    for key in needed:
        if key not in columns:
            close = difflib.get_close_matches(key, columns, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"fields: {', '.join(columns)}"
            raise DatasetError(f"{spec.path}: no field {key!r} in any row ({hint})")
    examples, skipped, first_error = [], 0, ""
    for number, row in enumerate(rows, start=1):
        if spec.limit and len(examples) == spec.limit:
            break
        try:
            if isinstance(row, RowError):
                raise row
            examples.append(_example(spec, row, number))
        except RowError as err:
            if spec.on_bad_row == "error":
                raise
            skipped, first_error = skipped + 1, first_error or str(err)
    if skipped:
        logger.warning("%s: skipped %d malformed rows (first: %s)", spec.path, skipped, first_error)
    if not examples:
        raise DatasetError(f"{spec.path}: no usable rows ({skipped} malformed, first: {first_error})")
    return examples


def load_examples(spec: DatasetSpec, head: int = 0) -> list[Example]:
    """Read ``spec`` into Examples, in file order; with ``head`` > 0 only its first ``head`` rows,
    streamed (how check-config looks at a large or hub dataset without downloading it).

    >>> import json, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write(json.dumps({"q": "1+1?", "sol": "It is \\\\boxed{2}."}) + "\\n")
    >>> ex, = load_examples(DatasetSpec(path=f.name, question_field="q", answer_from="boxed", solution_field="sol"))
    >>> ex.question, ex.answer, ex.row
    ('1+1?', '2', 1)
    """
    return examples_from_rows(spec, *load_rows(spec, head))
