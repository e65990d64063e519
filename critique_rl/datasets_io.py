"""Real training and evaluation sets: local JSONL / JSON / Parquet files or hub datasets, read
through HF ``datasets`` and mapped to (question, answer) by configuration, not by renaming files.

Where the answer comes from is part of the spec: a field (``answer_from: field``), the last
``\\boxed{}`` of a solution field (``boxed``), or the text after the last ``####`` of a worked
solution (``after_hashes``, GSM8K). A malformed row fails loudly with file, 1-based row and
field, or is skipped and counted with ``on_bad_row: skip``.

    >>> spec = benchmark_spec("gsm8k", data_root="/data")
    >>> spec.path, spec.question_field, spec.answer_from, spec.solution_field
    ('/data/gsm8k/test.jsonl', 'question', 'after_hashes', 'answer')
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critique_rl.config import DEFAULT_DATA_ROOT, DatasetSpec  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

# Suffix -> the `datasets` builder that reads it.
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DatasetError(ValueError):
    """A data file, hub dataset or row is unusable; the message names the file (and row and field)."""


@dataclass(frozen=True)
class Example:
    question: str
    answer: str
    row: int  # 1-based row in the file, so messages and sample logs point into the source
    source: str
    extra: dict[str, Any] = field(default_factory=dict)  # the row's other fields (id, level, worked solution ...)


BENCHMARKS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec(name="gsm8k", path="gsm8k/test.jsonl", split="test",
                         answer_from="after_hashes", solution_field="answer"),
    "gsm8k_train": DatasetSpec(name="gsm8k_train", path="gsm8k/train.jsonl", split="train",
                               answer_from="after_hashes", solution_field="answer"),
    "math500": DatasetSpec(name="math500", path="benchmarks/math500/test.jsonl", split="test", question_field="problem"),
    "aime24": DatasetSpec(name="aime24", path="benchmarks/aime24/test.jsonl", split="test", question_field="problem"),
    "amc23": DatasetSpec(name="amc23", path="benchmarks/amc23/test.jsonl", split="test"),
    "minerva_math": DatasetSpec(name="minerva_math", path="benchmarks/minerva_math/test.jsonl", split="test",
                                question_field="problem", answer_from="boxed"),
}
"""Ready specs of the shared data sets, paths relative to a data root: use ``benchmark_spec``."""


def benchmark_spec(name: str, data_root: str | Path = DEFAULT_DATA_ROOT) -> DatasetSpec:
    """The preset spec ``name`` (a key of BENCHMARKS) with its path under ``data_root``."""
    if name not in BENCHMARKS:
        raise DatasetError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    return dataclasses.replace(spec, path=str(Path(data_root) / spec.path))


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


def answer_text(value: Any) -> str:
    """An answer value as text: strings stripped, integral floats without '.0'.

    >>> answer_text(27.0), answer_text(0.5), answer_text(" 025 ")
    ('27', '0.5', '025')
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a string or a number, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _answer(spec: DatasetSpec, row: dict[str, Any]) -> tuple[str, str]:
    """(field read, answer) of one row; raises ValueError / TypeError naming what is wrong."""
    if spec.answer_from == "field":
        key = spec.answer_field
        value = row.get(key)
        if value is None:
            raise ValueError("missing or null")
        return key, answer_text(value)
    key = spec.solution_field
    solution = row.get(key)
    if not isinstance(solution, str):
        raise TypeError(f"expected a solution string, got {type(solution).__name__} {solution!r}")
    if spec.answer_from == "boxed":
        boxed = last_boxed(solution)
        if boxed is None:
            raise ValueError("no \\boxed{...} in the solution")
        return key, boxed.strip()
    if "####" not in solution:
        raise ValueError("no '####' in the solution")
    return key, solution.rsplit("####", 1)[1].strip()


def _example(spec: DatasetSpec, row: dict[str, Any], number: int) -> Example:
    """One row as an Example; raises DatasetError naming source, row and field."""
    where = f"{spec.path}: row {number}"
    question = row.get(spec.question_field)
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: field {spec.question_field!r}: expected a non-empty string, got {question!r}")
    try:
        key, answer = _answer(spec, row)
    except (TypeError, ValueError) as err:
        key = spec.answer_field if spec.answer_from == "field" else spec.solution_field
        raise DatasetError(f"{where}: field {key!r}: {err}") from None
    if not answer:
        raise DatasetError(f"{where}: field {key!r}: empty answer")
    # A worked solution stays in extra (reference for critiques); only the fields taken verbatim leave.
    taken = (spec.question_field, spec.answer_field if spec.answer_from == "field" else None)
    extra = {k: v for k, v in row.items() if k not in taken}
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


def _bad_jsonl_line(path: Path) -> str | None:
    """'row N: ...' for the first line of a JSONL file that is not a JSON object, else None."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                return f"row {number}: not valid JSON ({err})"
            if not isinstance(value, dict):
                return f"row {number}: expected a JSON object, got {type(value).__name__}"
    return None


def _load_rows(spec: DatasetSpec):
    """The spec's rows as a `datasets.Dataset`; clear errors for missing, unreadable or empty sources."""
    import datasets  # heavy import, only needed when real data is loaded

    path = Path(spec.path)
    builder = _BUILDERS.get(path.suffix)
    try:
        if builder is not None:
            if not path.is_file():
                raise DatasetError(f"{spec.path}: data file does not exist")
            if _is_blank(path):
                raise DatasetError(f"{spec.path}: file has no rows")
            rows = datasets.load_dataset(builder, data_files={spec.split: str(path)}, split=spec.split)
        elif path.is_file():
            raise DatasetError(f"{spec.path}: unsupported file type; expected {', '.join(_BUILDERS)}, a folder or a hub id")
        else:  # a hub id, or a local folder that `datasets` knows how to read
            rows = datasets.load_dataset(spec.path, spec.config or None, split=spec.split)
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one clear message
        why = (_bad_jsonl_line(path) if path.suffix == ".jsonl" else None) or _root_message(err)
        raise DatasetError(f"{spec.path}: could not load split {spec.split!r}: {why}") from err
    if len(rows) == 0:
        raise DatasetError(f"{spec.path}: file has no rows")
    return rows


def load_examples(spec: DatasetSpec) -> list[Example]:
    """Read ``spec`` into Examples, in file order.

    >>> import json, tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write(json.dumps({"q": "1+1?", "sol": "It is \\\\boxed{2}."}) + "\\n")
    >>> ex, = load_examples(DatasetSpec(path=f.name, question_field="q", answer_from="boxed", solution_field="sol"))
    >>> ex.question, ex.answer, ex.row
    ('1+1?', '2', 1)
    """
    if not spec.path:
        raise DatasetError("dataset spec has an empty path")
    rows = _load_rows(spec)
    needed = [spec.question_field, spec.answer_field if spec.answer_from == "field" else spec.solution_field]
    for key in needed:
        if key not in rows.column_names:
            close = difflib.get_close_matches(key, rows.column_names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"fields: {', '.join(rows.column_names)}"
            raise DatasetError(f"{spec.path}: no field {key!r} in any row ({hint})")
    examples, skipped, first_error = [], 0, ""
    for number, row in enumerate(rows, start=1):
        if spec.limit and len(examples) == spec.limit:
            break
        try:
            examples.append(_example(spec, row, number))
        except DatasetError as err:
            if spec.on_bad_row == "error":
                raise
            skipped, first_error = skipped + 1, first_error or str(err)
    if skipped:
        logger.warning("%s: skipped %d malformed rows (first: %s)", spec.path, skipped, first_error)
    if not examples:
        raise DatasetError(f"{spec.path}: no usable rows ({skipped} malformed, first: {first_error})")
    return examples
