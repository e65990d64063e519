"""Critiques written in the background while the trainer scores log-probs change nothing but time."""

import json

import pytest


def test_overlapped_critiques_give_the_same_run(train_short, tmp_path):
    runs = {}
    for overlap in ("true", "false"):
        run = train_short(f"critic.overlap={overlap}", "train.mini_batches=2", "loss.beta=0.01", "loss.entropy_coef=0.01")
        runs[overlap] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        samples = (run / "samples.jsonl").read_text()
        runs[overlap + "/samples"] = [json.loads(line)["attempts"][0]["text"] for line in samples.splitlines()]
        run.rename(tmp_path / f"run-{overlap}")
    on, off = runs["true"], runs["false"]
    assert runs["true/samples"] == runs["false/samples"]
    for a, b in zip(on[1:], off[1:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-7)
        assert a["refine/critiques"] == b["refine/critiques"]
    assert all("time/critique_wait" in r for r in on[1:]) and not any("time/critique_wait" in r for r in off[1:])
