"""The benchmark registry (data/benchmarks.yaml), `critique-rl data pull/list`, and where a benchmark
name is loaded from: pulled copy, else the hub, else one line saying how to get it.

There is no network here: ../shared/data stands in for the hub as the source of a pull (the same
loading code, a local source), and an unreachable hub is a closed local port."""

import json
from pathlib import Path

import pytest

from critique_rl import datasets_io
from critique_rl.benchmark_data import BENCHMARKS, benchmark_spec, data_dir, load_benchmark, pull
from critique_rl.check import Finding, check_config
from critique_rl.cli import main
from critique_rl.datasets_io import DatasetError, HubUnreachable, load_examples

# (rows, answer_from) of each entry, as the registry states them; the row counts are the hub datasets'.
REGISTRY = {"gsm8k": (1319, "after_hashes"), "gsm8k_train": (7473, "after_hashes"), "math500": (500, "field"),
            "aime24": (30, "field"), "amc23": (40, "field"), "minerva_math": (272, "boxed"), "olympiadbench": (675, "field")}


def test_registry_entries():
    assert {name: (b.rows, b.source.answer_from) for name, b in BENCHMARKS.items()} == REGISTRY
    assert len({b.file for b in BENCHMARKS.values()}) == len(BENCHMARKS)
    assert all(datasets_io.is_hub_id(b.source.path) and b.license and b.about for b in BENCHMARKS.values())
    olympiad = BENCHMARKS["olympiadbench"].source
    assert (olympiad.path, olympiad.config, olympiad.split) == ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")
    assert (olympiad.question_field, olympiad.answer_field, olympiad.solution_field) == ("question", "final_answer", "solution")


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CRITIQUE_RL_DATA", str(tmp_path / "env"))
    assert data_dir(tmp_path / "given") == tmp_path / "given"
    assert data_dir() == tmp_path / "env"
    monkeypatch.delenv("CRITIQUE_RL_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache" / "critique-rl" / "data"


@pytest.mark.parametrize("name", ["math500", "minerva_math", "gsm8k"])
def test_pull_from_the_shared_stand_in_then_load_by_name(shared_data, tmp_path, name, no_hub):
    b = BENCHMARKS[name]
    pulled = pull(name, tmp_path, source=str(shared_data / b.file))
    assert (pulled.path, pulled.rows, pulled.note) == (tmp_path / b.file, b.rows, "")
    examples = load_benchmark(name, tmp_path)  # the pulled copy: the hub is not asked (it is unreachable here)
    assert examples == load_examples(benchmark_spec(name, shared_data))
    assert pull(name, tmp_path).note == "already pulled (--force pulls it again)"


def test_pull_checks_every_row_and_writes_nothing_it_would_refuse(tmp_path):
    good = {"question": "Find x.", "final_answer": ["3"], "solution": ["x = 3."]}
    source = tmp_path / "olympiad.jsonl"
    source.write_text(json.dumps(good) + "\n" + json.dumps({**good, "final_answer": []}) + "\n")
    with pytest.raises(DatasetError, match=f"^{source}: row 2: field 'final_answer': empty list: expected at least one answer$"):
        pull("olympiadbench", tmp_path / "data", source=str(source))
    assert not (tmp_path / "data" / BENCHMARKS["olympiadbench"].file).exists()

    source.write_text(json.dumps(good) + "\n" + json.dumps({**good, "final_answer": ["1", "2"]}) + "\n")
    pulled = pull("olympiadbench", tmp_path / "data", source=str(source))
    assert pulled.note == "2 rows where the registry says 675: the source differs"
    assert [json.loads(line) for line in pulled.path.read_text().splitlines()][1]["final_answer"] == ["1", "2"]
    assert [ex.answer for ex in load_benchmark("olympiadbench", tmp_path / "data")] == ["3", "1, 2"]


def test_not_pulled_and_no_hub_is_one_line_saying_how_to_get_it(tmp_path, no_hub):
    with pytest.raises(HubUnreachable) as err:
        load_benchmark("math500", tmp_path)
    assert str(err.value).startswith(
        f"benchmark math500 is not pulled (no {tmp_path}/benchmarks/math500/test.jsonl) and could not be loaded from the "
        f"hub (HuggingFaceH4/MATH-500: the hub is unreachable (cannot connect to 127.0.0.1:{no_hub}: ")
    assert str(err.value).endswith("run `critique-rl data pull math500` on a machine with network and copy the file to that path")
    assert "\n" not in str(err.value)


def test_unknown_benchmark_names_the_known_ones():
    with pytest.raises(DatasetError, match=r"^unknown benchmark 'math50'; did you mean 'math500'\? known: gsm8k, gsm8k_train, "
                                           r"math500, aime24, amc23, minerva_math, olympiadbench \(any other dataset: "
                                           r"critique-rl eval --dataset SPEC.yaml\)$"):
        load_benchmark("math50")


def test_data_commands(shared_data, tmp_path, capsys, no_hub):
    source = str(shared_data / BENCHMARKS["amc23"].file)
    assert main(["data", "pull", "amc23", "--dir", str(tmp_path), "--source", source]) == 0
    assert capsys.readouterr().out == f"amc23: 40 rows -> {tmp_path / 'benchmarks/amc23/test.jsonl'}\n"
    assert main(["data", "list", "--dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "| amc23 | yes | 40 | math-ai/amc23 split test |" in listing
    assert "| olympiadbench | no | 675 | Hothan/OlympiadBench OE_TO_maths_en_COMP split train | Apache-2.0 |" in listing

    assert main(["data", "pull", "amc23", "aime24", "--dir", str(tmp_path), "--source", source]) == 2
    assert capsys.readouterr().err == ("critique-rl data: error: --source replaces one benchmark's hub dataset; "
                                       "name exactly one benchmark, not 2\n")
    assert main(["data", "pull", "aime24", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("critique-rl data: error: HuggingFaceH4/aime_2024: the hub is unreachable (cannot connect to ")
    assert err.count("\n") == 1
    assert not Path(tmp_path / "benchmarks/aime24").exists()


def test_check_config_maps_the_first_rows_of_every_dataset(tmp_path, no_hub):
    rows = [{"problem": f"Q{i}", "solution": f"so \\boxed{{{i}}}"} for i in range(1, 4)] + [{"problem": "Q4", "solution": "no box"}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    olympiad = tmp_path / "olympiad.jsonl"
    olympiad.write_text(json.dumps({"question": "Find x.", "final_answer": ["3"], "solution": ["x = 3."]}) + "\n")
    pull("olympiadbench", tmp_path / "data", source=str(olympiad))
    config = tmp_path / "run.yaml"
    config.write_text(f"inherit: qwen25-7b-paper\ndata:\n  train: {{path: {train}, question_field: problem, answer_from: boxed}}\n"
                      f"benchmarks: {{benchmarks: 'olympiadbench,math500,aime25', data_root: {tmp_path / 'data'}}}\n")
    findings = check_config(str(config))
    bad_row = f"data.train: {train}: row 4: field 'solution': no \\boxed{{...}} in the solution 'no box'"
    assert Finding("warning", bad_row + " (on_bad_row = skip: the run drops such rows)") in findings  # the preset skips
    assert Finding("note", "benchmarks: olympiadbench: the first 1 rows map to a question and an answer") in findings
    [math500] = [f for f in findings if f.message.startswith("benchmarks: math500: ")]
    assert math500.level == "warning" and math500.message.startswith("benchmarks: math500: not checked: benchmark math500 is not pulled")
    assert any(f.level == "error" and f.message.startswith("benchmarks: aime25: unknown benchmark 'aime25'") for f in findings)
    assert Finding("error", bad_row) in check_config(str(config), ["data.train.on_bad_row=error"])
