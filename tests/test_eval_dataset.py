"""`critique-rl eval --dataset SPEC.yaml`: any dataset evaluated by configuration alone, end to end
with a real tiny model; and every refusal of `eval` as one line with exit code 2, before a model loads."""

import json
import os
import subprocess
import sys
import time

import pytest

from critique_rl.cli import main

# OlympiadBench's shape: final_answer a one-item list, solution a list of strings.
ROWS = [{"id": i, "question": f"What is {i} + {i}?", "final_answer": [str(2 * i)],
         "solution": [f"{i} + {i} = {2 * i}.", f"So the answer is {2 * i}."], "unit": None} for i in range(1, 5)]
SPEC = "path: {path}\nsplit: test\nquestion_field: question\nanswer_field: final_answer\nsolution_field: solution\n"


def write_dataset(tmp_path, rows=ROWS, spec=SPEC):
    data = tmp_path / "olympiad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec_path = tmp_path / "olympiad.yaml"
    spec_path.write_text(spec.format(path=data))
    return data, spec_path


def test_eval_dataset_with_list_answers_writes_the_results_of_a_benchmark(tiny_model_dir, tmp_path):
    _, spec = write_dataset(tmp_path)
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "critique_rl.cli", "eval", "--config", "tiny", "--model", str(tiny_model_dir),
         "--dataset", str(spec), "--out", str(out), "benchmarks.num_samples=2", "benchmarks.max_new_tokens=8",
         "verifier.workers=1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    header = "| benchmark | problems | greedy_pass@1 | mean@2 | pass@2 |"
    assert (out / "results.md").read_text().splitlines()[0] == header and header in result.stdout
    rows = json.loads((out / "results.json").read_text())
    assert [(r["benchmark"], r["problems"]) for r in rows] == [("olympiad", 4)]  # named by the spec file's stem
    samples = [json.loads(line) for line in (out / "olympiad.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * (1 + 2)
    assert [s["answer"] for s in samples if s["mode"] == "greedy"] == ["2", "4", "6", "8"]
    assert {"question", "completion", "reward", "correct", "row"} <= set(samples[0])


def run_eval(capsys, *args):
    code = main(["eval", "--config", "tiny", "--model", "never-loaded", *args])
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    return code, err.removeprefix("critique-rl eval: error: ").rstrip("\n")


def test_nothing_to_evaluate(capsys):
    assert run_eval(capsys, "task.name=math", "critic.critique_type=ground_truth") == (
        2, "nothing to evaluate: task math has no held-out splits of its own; name benchmarks (--benchmarks "
           "math500,aime24, see `critique-rl data list`) or a dataset (--dataset SPEC.yaml)")


@pytest.mark.parametrize("spec, message", [
    (None, "dataset spec '{spec}' does not exist (expected a YAML file with the keys of data.train)"),
    ("- path: x.jsonl\n", "{spec}: expected a mapping of dataset spec keys (path, split, question_field, ...), got list"),
    ("path: {path}\nquestion_feld: question\n", "{spec}: unknown key 'question_feld' (did you mean question_field?)"),
    ("path: {path}\nlimit: many\n", "{spec}: limit = 'many'; expected an integer"),
    ("path: {path}\nanswer_from: last_line\n", "{spec}: answer_from = 'last_line'; expected one of 'field', 'boxed', 'after_hashes'"),
    ("split: test\n", "{spec}: 'path' is missing: a local .jsonl / .json / .parquet file or a hub dataset id"),
    ("path: {path}\n", "{path}: no field 'answer' in any row (did you mean 'final_answer'?)"),
    ("path: {path}\nanswer_field: final_answer\nanswer_from: boxed\nsolution_field: id\n",
     "{path}: row 1: field 'id': expected a solution string or a list of strings, got int 1"),
])
def test_dataset_spec_errors(capsys, tmp_path, spec, message):
    data, spec_path = write_dataset(tmp_path)
    if spec is None:
        spec_path.unlink()
    else:
        spec_path.write_text(spec.format(path=data))
    assert run_eval(capsys, "--dataset", str(spec_path)) == (2, message.format(spec=spec_path, path=data))


def test_malformed_rows_are_named_and_long_values_clipped(capsys, tmp_path):
    data, spec = write_dataset(tmp_path, [ROWS[0], {**ROWS[1], "final_answer": []}])
    assert run_eval(capsys, "--dataset", str(spec)) == (
        2, f"{data}: row 2: field 'final_answer': empty list: expected at least one answer")
    write_dataset(tmp_path, [ROWS[0], {**ROWS[1], "question": ["x" * 5000]}])
    code, message = run_eval(capsys, "--dataset", str(spec))
    assert code == 2 and message == (f"{data}: row 2: field 'question': expected a non-empty string, got "
                                     f"['{'x' * 198}... (5004 characters)")


def test_benchmark_neither_pulled_nor_on_the_hub(capsys, tmp_path, no_hub):
    code, message = run_eval(capsys, "--benchmarks", "math500", f"benchmarks.data_root={tmp_path}")
    assert code == 2 and message.startswith(f"benchmark math500 is not pulled (no {tmp_path}/benchmarks/math500/test.jsonl)")
    assert message.endswith("run `critique-rl data pull math500` on a machine with network and copy the file to that path")


def test_offline_hub_fails_fast_in_one_line(tmp_path):
    # HF_HUB_OFFLINE is read when `datasets` is imported, hence a fresh process.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "critique_rl.cli", "eval", "--config", "tiny", "--model", "never-loaded",
                             "--benchmarks", "aime24", f"benchmarks.data_root={tmp_path}"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if "examples/s" not in line]
    assert len(error) == 1 and error[0].startswith("critique-rl eval: error: benchmark aime24 is not pulled"), result.stderr
    assert "HuggingFaceH4/aime_2024: Couldn't reach 'HuggingFaceH4/aime_2024' on the Hub (OfflineModeIsEnabled)" in error[0]
    assert time.monotonic() - start < 60  # no retry loop against the hub
