"""scripts/analyze_refinements.py on a run directory written as the trainer writes it: each logged
refinement lands in the category its text says, and the windows read the step's metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "analyze_refinements.py"
CRITIQUE = "step 1 ok. step 2 wrong, should be 65+98=163. verdict: wrong"


def refinement(text: str, reward: float) -> dict:
    return {"attempt_index": 0, "critique": CRITIQUE, "critique_fallback": None, "text": text, "reward": reward,
            "chosen": False, "member": None}


def test_refinements_are_sorted_by_where_they_leave_the_reference(tmp_path: Path):
    run = tmp_path / "critique_grpo"
    run.mkdir()
    group = {"question": "24+41+98", "answer": 163, "attempts": [{"text": "24+41=65; 65+98=63; answer 63", "reward": 0.0}]}
    samples = [
        {"step": 1, "prompt": 0, **group, "refinements": [
            refinement("24+41=65; 65+98=163; answer 163", 1.0),     # correct
            refinement("24+41=65; 65+98=123; answer 123", 0.0),     # ignored the correction, tens digit only
            refinement("24+41=65; 65+98=63; answer 63", 0.0),       # ignored it, kept the attempt's value
        ]},
        {"step": 2, "prompt": 0, **group, "refinements": [
            refinement("24+41=65; 65+98=163; answer 164", 0.0),     # copied it, then a later error
            refinement("24+41=66; 66+98=164; answer 164", 0.0),     # broke step 1, which the attempt had right
        ]},
        {"step": 3, "prompt": 0, **group, "refinements": []},
    ]
    metrics = [{"step": 0}, {"step": 1, "refine/success_rate": 0.25, "refine/triggered_groups": 4, "accuracy/train_hard": 0.0},
               {"step": 2, "refine/success_rate": 0.75, "refine/triggered_groups": 2, "accuracy/train_hard": 0.5},
               {"step": 3, "refine/triggered_groups": 0, "accuracy/train_hard": 1.0}]   # no refinements: no rate
    (run / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))

    out = subprocess.run([sys.executable, str(SCRIPT), str(run), "--window", "2"], capture_output=True, text=True,
                         check=True, timeout=60)
    first, second = json.loads(out.stdout.strip().splitlines()[-1])["rows"]
    assert first == {"steps": "1-2", "refinements": 5, "correct": 1, "ignored": 2, "later": 1, "earlier": 1,
                     "ignored_tens_only": 1, "success_rate": 0.5, "triggered_groups": 3.0, "train_hard": 0.25}
    assert second == {"steps": "3-3", "refinements": 0, "correct": 0, "ignored": 0, "later": 0, "earlier": 0,
                      "ignored_tens_only": 0, "success_rate": None, "triggered_groups": 0.0, "train_hard": 1.0}
    assert "| 1-2 | 0.50 | 5 | 1 | 2 (1) | 1 | 1 | 3.0 | 0.25 |" in out.stdout
    assert "| 3-3 | — | 0 |" in out.stdout


def test_a_folder_without_samples_is_refused(tmp_path: Path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == f"{tmp_path}: no samples.jsonl (is this a run directory?)"
