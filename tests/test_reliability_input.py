"""Bad input stops the real CLI before training with one message (exit 2, no traceback), blocking nothing."""

import http.server
import json
import threading

import pytest
import yaml

from critique_rl.config import load_config
from critique_rl.templates import packaged_prompts_dir

BROKEN_TEMPLATES = {
    "syntax.jinja": "Q: {{ question }\n",
    "typo.jinja": "{{ question }}\ntry {{ atempt }}\n{{ critique }}\n",
    "zero.jinja": "{{ question }}\n{{ 1/0 }}\n",
    "include.jinja": "{{ question }} {{ attempt }} {{ critique }}\n{% include 'missing.jinja' %}\n",
    "range.jinja": "{% for i in range(10**7) %}{% endfor %}\n",
}


@pytest.mark.parametrize("args, message", [
    (["train.stpes=3"], "override 'train.stpes=3': unknown key 'train.stpes' (did you mean train.steps?)"),
    (["train.steps=x"], "override 'train.steps=x': train.steps = 'x'; expected an integer"),
    (["train.save_every=0"], "override 'train.save_every=0': train.save_every = 0; expected >= 1"),
    # every method: critique_grpo used to crash in numpy after the first evaluation
    (["method=critique_grpo", "rollout.num_generations=0"],
     "override 'rollout.num_generations=0': rollout.num_generations = 0; expected >= 1"),
    (["method=grpo", "rollout.num_generations=-2"],
     "override 'rollout.num_generations=-2': rollout.num_generations = -2; expected >= 1"),
    (["critic.timeout_s=-1"], "override 'critic.timeout_s=-1': critic.timeout_s = -1.0; expected > 0"),
    (["critic.deadline_s=0"], "override 'critic.deadline_s=0': critic.deadline_s = 0.0; expected > 0"),
    (["critic.max_retries=-1"], "override 'critic.max_retries=-1': critic.max_retries = -1; expected >= 0"),
    (["loss.top_entropy_quantile=1.5"],
     "override 'loss.top_entropy_quantile=1.5': loss.top_entropy_quantile = 1.5; expected in (0, 1]"),
    (["model.name_or_path=/nonexistent/model"], "model.name_or_path '/nonexistent/model': no such directory "
                                                "(nearest existing folder: /)"),
    (["model.name_or_path=runs/typo/warmstart"], "model.name_or_path 'runs/typo/warmstart': no such directory "
                                                 "{tmp}/runs/typo/warmstart (nearest existing folder: {tmp})"),
    (["critic.backend=hf", "critic.model=models/typo/critic"],
     "critic.model 'models/typo/critic': no such directory {tmp}/models/typo/critic (nearest existing folder: {tmp})"),
    (["prompts.refine=missing.jinja"], "template 'missing.jinja' not found: neither a file nor a packaged template under {prompts}"),
    (["prompts.solve=syntax.jinja"], "{tmp}/syntax.jinja:1: template syntax error: unexpected '}}'"),
    (["prompts.refine=typo.jinja"], "{tmp}/typo.jinja:2: template variable 'atempt' is not provided; "
                                    "this template receives: attempt, critique, question"),
    (["prompts.solve=zero.jinja"], "{tmp}/zero.jinja:2: ZeroDivisionError: division by zero"),
    (["prompts.refine=include.jinja"], "{tmp}/include.jinja:2: template 'missing.jinja' not found in {tmp}"),
    (["critic.template=range.jinja"], "{tmp}/range.jinja:1: OverflowError: Range too big. The sandbox blocks ranges "
                                      "larger than MAX_RANGE (100000)."),
])
def test_bad_input_stops_with_one_clear_message(cli, tmp_path, args, message):
    for name, text in BROKEN_TEMPLATES.items():
        (tmp_path / name).write_text(text)
    run = tmp_path / "run"
    result = cli.train(run, *args, check_rc=2)
    first = message.format(tmp=tmp_path, prompts=packaged_prompts_dir())
    assert result.stderr.splitlines()[0] == f"critique-rl train: error: {first}", result.stderr
    assert "Traceback" not in result.stderr
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


class MissingRepoHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub answers one for a repository that does not exist (or is private)."""

    def do_HEAD(self):
        self.send_response(401)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def missing_repo_hub(monkeypatch, tmp_path):
    """A hub on 127.0.0.1 that knows no repository, and an empty hub cache."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MissingRepoHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    yield
    server.shutdown()


def test_a_hub_id_that_does_not_load_fails_in_one_line(cli, tmp_path, missing_repo_hub):
    result = cli.train(tmp_path / "run", "model.name_or_path=owner/typo", check_rc=2)
    prefix = (f"critique-rl train: error: model.name_or_path 'owner/typo': no such directory {tmp_path}/owner/typo "
              f"(nearest existing folder: {tmp_path}), and loading it from the hub failed: owner/typo is not a local "
              "folder and is not a valid model identifier")
    assert result.stderr.startswith(prefix) and len(result.stderr.splitlines()) == 1, result.stderr


def test_an_unreachable_hub_is_not_retried(cli, tmp_path, no_hub, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    result = cli("eval", "--config", "tiny", "--model", "owner/typo", check_rc=2)
    assert result.stderr == (f"critique-rl eval: error: --model 'owner/typo': no such directory {tmp_path}/owner/typo "
                             f"(nearest existing folder: {tmp_path}), not in the local hub cache, and the hub is unreachable "
                             f"(cannot connect to 127.0.0.1:{no_hub}: [Errno 111] Connection refused)\n")


def test_dry_run_needs_no_out_and_checks_the_model(cli, tmp_path):
    result = cli("train", "--dry-run", "--config", "tiny", f"model.name_or_path={cli.warm}")
    assert "--- solve" in result.stdout and "--- refine" in result.stdout
    assert result.stdout.splitlines()[-1] == f"--- model.name_or_path {cli.warm}: config and tokenizer load"
    assert list(tmp_path.iterdir()) == []                    # nothing written
    result = cli("train", "--dry-run", "--config", "tiny", "model.name_or_path=runs/typo/warmstart", check_rc=2)
    assert result.stderr == (f"critique-rl train: error: model.name_or_path 'runs/typo/warmstart': no such directory "
                             f"{tmp_path}/runs/typo/warmstart (nearest existing folder: {tmp_path})\n")
    assert result.stdout == ""


def test_out_of_range_values_in_a_yaml_file_or_resume_overrides_are_refused(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherit: tiny\ncritic:\n  deadline_s: 0\n")
    result = cli("train", "--config", str(bad), "--out", str(tmp_path / "new"), check_rc=2)
    assert result.stderr.splitlines()[0] == f"critique-rl train: error: {bad}: critic.deadline_s = 0.0; expected > 0"
    assert not (tmp_path / "new").exists()
    run = tmp_path / "run"
    run.mkdir()
    config = yaml.safe_dump(load_config("tiny", [f"model.name_or_path={cli.warm}"]).to_dict())
    (run / "config.yaml").write_text(config)
    result = cli("train", "--resume", str(run), "critic.max_retries=-1", check_rc=2)
    assert result.stderr.splitlines()[0] == ("critique-rl train: error: override 'critic.max_retries=-1': "
                                             "critic.max_retries = -1; expected >= 0")
    assert [p.name for p in run.iterdir()] == ["config.yaml"] and (run / "config.yaml").read_text() == config


def test_on_bad_row_skip_also_skips_lines_that_are_not_json(cli, tmp_path):
    data = tmp_path / "sums.jsonl"
    data.write_text('{"question": "What is 12 + 30?", "answer": "42"}\n{"question": "What is 1 + 1?", "answer": \n'
                    '{"question": "What is 20 + 5?", "answer": 25}\n[3]\n')
    spec = tmp_path / "sums.yaml"
    evaluate = ["eval", "--config", "tiny", "--model", str(cli.warm), "--dataset", str(spec), "--out", str(tmp_path / "out"),
                "benchmarks.num_samples=0", "verifier.workers=1"]
    spec.write_text(f"path: {data}\non_bad_row: skip\n")
    result = cli(*evaluate)
    assert result.stderr.splitlines()[0] == (f"{data}: skipped 2 malformed rows (first: {data}: row 2: not valid JSON "
                                             "(Expecting value at column 42))")
    assert [(r["benchmark"], r["problems"]) for r in json.loads((tmp_path / "out" / "results.json").read_text())] == [("sums", 2)]
    spec.write_text(f"path: {data}\non_bad_row: error\n")
    result = cli(*[a if a != str(tmp_path / "out") else str(tmp_path / "out2") for a in evaluate], check_rc=2)
    assert result.stderr.splitlines()[0] == (f"critique-rl eval: error: {data}: row 2: not valid JSON "
                                             "(Expecting value at column 42)")
    assert not (tmp_path / "out2").exists()


def test_report_takes_a_pipeline_folder_and_refuses_a_folder_without_runs(cli, tmp_path):
    from tests.test_report import fake_run

    pipeline = tmp_path / "pipeline"
    for method in ("grpo_equal_compute", "critique_grpo", "grpo"):
        fake_run(pipeline / method, "grpo" if method != "critique_grpo" else method, [0.0, 0.1], 0.99, 2)
    (pipeline / "warmstart").mkdir()                      # no metrics.jsonl: not a run
    (pipeline / "report.md").write_text("the pipeline's own report\n")
    result = cli("report", str(pipeline))
    out = pipeline / "report"
    assert result.stdout.splitlines()[0] == f"report: {out / 'report.md'}  plots: {out / 'curves.png'}"
    rows = [line.split(" | ")[0] for line in (out / "report.md").read_text().splitlines() if line.startswith("| grpo")
            or line.startswith("| critique_grpo")]
    assert rows == ["| grpo", "| critique_grpo", "| grpo_equal_compute"]
    assert (pipeline / "report.md").read_text() == "the pipeline's own report\n"
    result = cli("report", str(pipeline / "warmstart"), "--out", str(tmp_path / "cmp"), check_rc=2)
    assert result.stderr.splitlines()[0] == (f"critique-rl report: error: {pipeline / 'warmstart'}: neither a run "
                                             "directory (no metrics.jsonl) nor a folder of runs (no subdirectory holds one)")
    assert not (tmp_path / "cmp").exists()
