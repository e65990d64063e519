"""A dead critic in a real training process: a closed port on 127.0.0.1, then a real server for the resume."""

import json
import re

from critique_rl.checkpoint import latest_checkpoint
from critique_rl.critics.stub_server import StubServer
from tests.conftest import free_port


def test_a_dead_critic_is_noticed_and_stops_the_run_cleanly(cli, tmp_path):
    run = tmp_path / "run"
    critic = ["critic.backend=openai", "critic.model=stub", "critic.api_key_env=", "critic.backoff_s=0.1"]
    result = cli.train(run, *critic, f"critic.base_url=http://127.0.0.1:{free_port()}/v1", "train.steps=10",
                       "train.save_every=100", "critic.alarm_fallback_patience=2", "critic.alarm_fallback_stop=true",
                       check_rc=5)
    rows = cli.rows(run)[1:]
    assert [r["step"] for r in rows] == [1, 2] and latest_checkpoint(run).name == "step-000002"
    last = rows[-1]
    fell_back = f"{int(last['critic/fallbacks'])}/{int(last['refine/critiques'])}"
    assert result.stderr.splitlines()[-1] == (
        f"critique-rl train: stopped after step 2: alarm critic_fallbacks (critic.alarm_fallback_stop): {fell_back} "
        "critiques fell back, more than critic.alarm_fallback_share 0.5 for 2 steps in a row: is the critic up? "
        f"(reasons: critique_fallback in samples.jsonl); checkpoint saved. Resume with: critique-rl train --resume {run}")
    assert "Traceback" not in result.stderr
    # Every critique fell back, on the console line of each step; the alarm fired at step 2.
    shown = re.findall(r"\| fallback (\d+)/(\d+) \|", result.stdout)
    assert len(shown) == 2 and all(a == b != "0" for a, b in shown)
    assert f"warning: step 2: {fell_back} critiques fell back" in result.stdout
    assert [r.get("alarm/critic_fallbacks") for r in rows] == [None, 1.0]
    # The circuit breaker: refused connections cost seconds; step 2 sends nothing.
    assert all(r["time/critique"] < 10 for r in rows)
    assert last["critic/circuit_open"] == last["critic/fallbacks"] and last["critic/requests"] == 0
    # Each logged critique's reason is in samples.jsonl.
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    found = {step: {ref["critique_fallback"] for s in samples if s["step"] == step for ref in s.get("refinements", [])}
             for step in (1, 2)}
    assert found[1] <= {"connection", "circuit_open"} and "connection" in found[1] and found[2] == {"circuit_open"}

    # The critic is back: the resumed run continues from the checkpoint without fallbacks.
    with StubServer() as server:
        cli("train", "--resume", str(run), f"critic.base_url={server.base_url}", "train.steps=3")
    resumed = cli.rows(run)[-1]
    assert resumed["step"] == 3 and resumed["critic/fallbacks"] == 0 and "alarm/critic_fallbacks" not in resumed
