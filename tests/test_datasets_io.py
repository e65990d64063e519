"""critique_rl.datasets_io on the real shared files and on small files with deliberate defects."""

import json
import logging

import pytest

from critique_rl.datasets_io import (
    BENCHMARKS,
    DatasetError,
    DatasetSpec,
    benchmark_spec,
    load_examples,
)

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
    assert set(EXPECTED) == set(BENCHMARKS)


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
    with pytest.raises(DatasetError, match="unknown benchmark 'aime25'; known: gsm8k"):
        benchmark_spec("aime25", shared_data)


# ---------------------------------------------------------------- small files with defects

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GOOD = {"q": "What is 1+1?", "a": "2", "sol": "1+1 = \\boxed{2}", "work": "1+1=2\n#### 2"}


@pytest.mark.parametrize("bad, spec_kw, field, why", [
    ({"a": "3"}, {}, "q", "expected a non-empty string, got None"),
    ({"q": 7, "a": "3"}, {}, "q", "expected a non-empty string, got 7"),
    ({"q": "  ", "a": "3"}, {}, "q", "expected a non-empty string"),
    ({"q": "Q"}, {}, "a", "missing or null"),
    ({"q": "Q", "a": "   "}, {}, "a", "empty answer"),
    ({"q": "Q", "a": [1]}, {}, "a", "expected a string or a number, got list"),
    ({"q": "Q", "sol": "it is 3"}, {"answer_from": "boxed"}, "sol", "no \\\\boxed"),
    ({"q": "Q", "sol": "it is \\boxed{ }"}, {"answer_from": "boxed"}, "sol", "empty answer"),
    ({"q": "Q", "work": "it is 3"}, {"answer_from": "after_hashes", "solution_field": "work"}, "work", "no '####'"),
    ({"q": "Q", "sol": 3}, {"answer_from": "boxed"}, "sol", "expected a solution string, got int"),
])
def test_malformed_row_names_file_row_and_field(tmp_path, bad, spec_kw, field, why):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, bad, GOOD])
    spec = DatasetSpec(path=path, question_field="q", answer_field="a", **{"solution_field": "sol", **spec_kw})
    with pytest.raises(DatasetError, match=rf"^{path}: row 3: field '{field}': {why}"):
        load_examples(spec)


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
