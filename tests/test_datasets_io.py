"""critique_rl.datasets_io on the real shared files (read as pulled copies of the registry's
benchmarks) and on small files with deliberate defects."""

import json
import logging

import pytest

from critique_rl.benchmark_data import BENCHMARKS, benchmark_spec
from critique_rl.datasets_io import DatasetError, DatasetSpec, load_examples

# (rows, first question starts, first answer) of each shared file, read with its preset alone.
EXPECTED = {
    "gsm8k": (1319, "Janet’s ducks lay 16 eggs", "18"),
    "gsm8k_train": (7473, "Natalia sold clips", "72"),
    "math500": (500, "Convert the point $(0,3)$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    "aime24": (30, "Every morning Aya goes", "204"),
    "amc23": (40, "Cities $A$ and $B$", "27"),
    "minerva_math": (272, "Each of the two Magellan telescopes", "1.6"),
}


def test_every_preset_is_checked():
    # The shared stand-in has no OlympiadBench; tests/test_benchmark_data.py pulls an OlympiadBench-shaped file.
    assert set(EXPECTED) == set(BENCHMARKS) - {"olympiadbench"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_files_load_through_their_presets(shared_data, name):
    rows, question, answer = EXPECTED[name]
    examples = load_examples(benchmark_spec(name, shared_data))
    assert len(examples) == rows
    first = examples[0]
    assert first.question.startswith(question)
    assert first.answer == answer
    assert first.row == 1 and first.source == name
    assert [ex.row for ex in examples] == list(range(1, rows + 1))
    assert all(ex.question.strip() and ex.answer for ex in examples)


def test_answer_forms_of_the_shared_files(shared_data):
    gsm8k = load_examples(benchmark_spec("gsm8k", shared_data))
    assert "2,125" in {ex.answer for ex in gsm8k}  # thousands separators are kept verbatim
    assert all("####" not in ex.answer for ex in gsm8k)
    amc = load_examples(benchmark_spec("amc23", shared_data))
    assert all(ex.answer.lstrip("-").isdigit() for ex in amc)  # 27.0 -> "27"
    minerva = load_examples(benchmark_spec("minerva_math", shared_data))
    assert all("\\boxed" not in ex.answer for ex in minerva)
    math500 = load_examples(benchmark_spec("math500", shared_data))
    assert set(math500[0].extra) == {"solution", "subject", "level", "unique_id"}


def test_math500_boxed_answers_match_the_answer_field(shared_data):
    by_field = load_examples(benchmark_spec("math500", shared_data))
    spec = DatasetSpec(path=str(shared_data / "benchmarks/math500/test.jsonl"), question_field="problem", answer_from="boxed")
    by_boxed = load_examples(spec)
    assert [ex.answer for ex in by_boxed] == [ex.answer for ex in by_field]  # the last \boxed{} of 8 with two


def test_limit_and_unknown_preset(shared_data):
    spec = benchmark_spec("aime24", shared_data)
    spec.limit = 3
    assert [ex.row for ex in load_examples(spec)] == [1, 2, 3]
    with pytest.raises(DatasetError, match="unknown benchmark 'aime25'; did you mean 'aime24'\\? known: gsm8k"):
        benchmark_spec("aime25", shared_data)


# ---------------------------------------------------------------- small files with defects

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GOOD = {"q": "What is 1+1?", "a": "2", "sol": "1+1 = \\boxed{2}", "work": "1+1=2\n#### 2"}


@pytest.mark.parametrize("bad, spec_kw, field, why", [
    ({"a": "3"}, {}, "q", "expected a non-empty string, got None"),
    ({"q": 7, "a": "3"}, {}, "q", "expected a non-empty string, got 7"),
    ({"q": "  ", "a": "3"}, {}, "q", "expected a non-empty string, got '  '"),
    ({"q": "Q"}, {}, "a", "missing or null"),
    ({"q": "Q", "a": "   "}, {}, "a", "empty answer"),
    ({"q": "Q", "a": []}, {}, "a", "empty list: expected at least one answer"),
    ({"q": "Q", "a": [["1"]]}, {}, "a", r"expected a string, a number or a list of them, got list \['1'\]"),
    ({"q": "Q", "a": {"x": 1}}, {}, "a", r"expected a string, a number or a list of them, got dict \{'x': 1\}"),
    ({"q": "Q", "sol": "it is 3"}, {"answer_from": "boxed"}, "sol", r"no \\boxed\{\.\.\.\} in the solution 'it is 3'"),
    ({"q": "Q", "sol": "it is \\boxed{ }"}, {"answer_from": "boxed"}, "sol", "empty answer"),
    ({"q": "Q", "work": "it is 3"}, {"answer_from": "after_hashes", "solution_field": "work"}, "work",
     "no '####' in the solution 'it is 3'"),
    ({"q": "Q", "sol": 3}, {"answer_from": "boxed"}, "sol", "expected a solution string or a list of strings, got int 3"),
    ({"q": "Q", "sol": []}, {"answer_from": "boxed"}, "sol", "empty list: expected at least one solution"),
    ({"q": "Q", "sol": ["a", 3]}, {"answer_from": "boxed"}, "sol",
     r"expected a solution string or a list of strings, got a list holding \['a', 3\]"),
])
def test_malformed_row_names_file_row_and_field(tmp_path, bad, spec_kw, field, why):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, bad, GOOD])
    spec = DatasetSpec(path=path, question_field="q", answer_field="a", **{"solution_field": "sol", **spec_kw})
    with pytest.raises(DatasetError, match=rf"^{path}: row 3: field '{field}': {why}$"):
        load_examples(spec)


# OlympiadBench's shape: final_answer a list (several items when a problem has several answers),
# solution a list of worked solutions.
OLYMPIAD = [
    {"id": 1, "question": "Find x.", "final_answer": ["$x=3$"], "solution": ["So $x=3$."]},
    {"id": 2, "question": "Find all n.", "final_answer": ["1", "2"], "solution": ["First.", "Second: \\boxed{1, 2}"]},
]


def test_list_answers_and_solutions(tmp_path):
    path = write_jsonl(tmp_path / "olympiad.jsonl", OLYMPIAD)
    by_field = load_examples(DatasetSpec(path=path, answer_field="final_answer"))
    assert [ex.answer for ex in by_field] == ["$x=3$", "1, 2"]  # one item as is, several joined with ", "
    assert [ex.extra["solution"] for ex in by_field] == ["So $x=3$.", "First.\nSecond: \\boxed{1, 2}"]
    by_boxed = load_examples(DatasetSpec(path=path, answer_from="boxed", on_bad_row="skip"))
    assert [(ex.row, ex.answer) for ex in by_boxed] == [(2, "1, 2")]  # the solutions are joined, then searched


def test_long_values_are_clipped_in_messages(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": ["x" * 5000], "a": "1"}])
    with pytest.raises(DatasetError) as err:
        load_examples(DatasetSpec(path=path, question_field="q", answer_field="a"))
    message = str(err.value)
    assert message.startswith(f"{path}: row 1: field 'q': expected a non-empty string, got ['xxx")
    assert message.endswith("... (5004 characters)") and len(message) < len(path) + 300


def test_skip_drops_and_counts_bad_rows(tmp_path, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"q": "Q"}, GOOD, {"q": 5, "a": "1"}, {**GOOD, "a": 4.0}])
    spec = DatasetSpec(path=path, question_field="q", answer_field="a", on_bad_row="skip")
    with caplog.at_level(logging.WARNING, logger="critique_rl.datasets_io"):
        examples = load_examples(spec)
    assert [(ex.row, ex.answer) for ex in examples] == [(1, "2"), (3, "2"), (5, "4")]
    assert f"{path}: skipped 2 malformed rows (first: {path}: row 2: field 'a': missing or null)" in caplog.text
    assert examples[0].extra == {"sol": GOOD["sol"], "work": GOOD["work"]}


def test_skip_with_no_good_row_still_fails(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "Q", "a": ""}, {"q": 5, "a": "1"}])
    with pytest.raises(DatasetError, match="no usable rows \\(2 malformed"):
        load_examples(DatasetSpec(path=path, question_field="q", answer_field="a", on_bad_row="skip"))


@pytest.mark.parametrize("content, why", [
    (None, "data file does not exist"),
    ("", "file has no rows"),
    ("\n  \n", "file has no rows"),
    ('{"q": "a", "a": "1"}\nnot json\n', "row 2: not valid JSON"),
    ('{"q": "a", "a": "1"}\n[1, 2]\n', "row 2: expected a JSON object, got list"),
])
def test_unusable_file_is_named(tmp_path, content, why):
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=f"^{path}: .*{why}"):
        load_examples(DatasetSpec(path=str(path), question_field="q", answer_field="a"))


def test_unknown_field_suggests_the_close_one(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    with pytest.raises(DatasetError, match="no field 'sols' in any row \\(did you mean 'sol'"):
        load_examples(DatasetSpec(path=path, question_field="q", answer_from="boxed", solution_field="sols"))
    with pytest.raises(DatasetError, match="no field 'zzz' in any row \\(fields: q, a, sol, work\\)"):
        load_examples(DatasetSpec(path=path, question_field="q", answer_field="zzz"))


def test_unsupported_suffix_and_empty_path(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("q,a\nx,1\n")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_examples(DatasetSpec(path=str(path)))
    with pytest.raises(DatasetError, match="empty path"):
        load_examples(DatasetSpec())


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"problem": ["Q1", "Q2"], "solution": ["\\boxed{\\frac{1}{2}}", "so \\boxed{x^{2}}."]}), path)
    spec = DatasetSpec(path=str(path), split="test", question_field="problem", answer_from="boxed")
    assert [(ex.question, ex.answer) for ex in load_examples(spec)] == [("Q1", "\\frac{1}{2}"), ("Q2", "x^{2}")]


def test_folder_goes_through_the_hub_loader(tmp_path):
    # A path that is not a data file takes the hub-id branch (load_dataset(path, config, split));
    # a local folder exercises that call without a network.
    write_jsonl(tmp_path / "test.jsonl", [GOOD, {**GOOD, "q": "Q2"}])
    spec = DatasetSpec(path=str(tmp_path), split="test", question_field="q", answer_from="after_hashes", solution_field="work")
    assert [(ex.question, ex.answer) for ex in load_examples(spec)] == [("What is 1+1?", "2"), ("Q2", "2")]
    with pytest.raises(DatasetError, match=f"^{tmp_path}: could not load split 'validation'"):
        load_examples(DatasetSpec(path=str(tmp_path), split="validation"))


def test_skip_also_drops_lines_that_are_not_json_objects(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "Q1", "a": "1"}\n{"q": "Q2", "a": \n[1, 2]\n{"q": "Q4"}\n{"q": "Q5", "a": 5, "id": 7}\n')
    spec = DatasetSpec(path=str(path), question_field="q", answer_field="a", on_bad_row="skip")
    with caplog.at_level(logging.WARNING, logger="critique_rl.datasets_io"):
        examples = load_examples(spec)
    assert [(ex.row, ex.answer, ex.extra) for ex in examples] == [(1, "1", {"id": None}), (5, "5", {"id": 7})]
    assert (f"{path}: skipped 3 malformed rows (first: {path}: row 2: not valid JSON (Expecting value at column 18))"
            in caplog.text)
    path.write_text("not json\n[1]\n")
    with pytest.raises(DatasetError, match=rf"^{path}: no line is a JSON object with fields \(2 malformed, first: "
                                           rf"{path}: row 1: not valid JSON \(Expecting value at column 1\)\)$"):
        load_examples(spec)
