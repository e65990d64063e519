"""Why refinements fail, window by window, in a Critique-GRPO run on the synthetic task.

    python scripts/analyze_refinements.py runs/demo/critique_grpo [--window 10]

Reads the logged groups of ``samples.jsonl`` (``train.samples_per_step`` per step) and sorts
every refinement by where it first departs from the reference solution, relative to the step
the rule critique corrected (``step k wrong, should be A+B=C``):

    correct        the refinement's final answer is right
    ignored        it rewrote the corrected step k with another value than the critique gave
                   (``tens`` counts those that differ from it in the tens digit only)
    later          it copied the correction and went wrong in a later step
    earlier        it broke a step before k that the attempt had right

Beside them, per window from ``metrics.jsonl``: the logged refinement success rate (over all
refinements, not only the logged groups), triggered groups, and the policy's training accuracy
on hard prompts under the plain solve prompt. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from critique_rl.tasks.arithmetic import check_steps, problem_from_operands

CORRECTION = re.compile(r"step (\d+) wrong, should be \d+\+\d+=(\d+)")
CATEGORIES = ("correct", "ignored", "later", "earlier")


def classify(question: str, critique: str, refinement: str, reward: float) -> tuple[str, bool]:
    """(category, differs from the critique's value in the tens digit only) of one refinement.

    >>> classify("24+41+98", "step 1 ok. step 2 wrong, should be 65+98=163. verdict: wrong",
    ...          "24+41=65; 65+98=123; answer 123", 0.0)
    ('ignored', True)
    >>> classify("24+41+98", "step 1 ok. step 2 wrong, should be 65+98=163. verdict: wrong",
    ...          "24+41=65; 65+98=163; answer 163", 1.0)
    ('correct', False)
    """
    if reward > 0:
        return "correct", False
    found = CORRECTION.search(critique)
    if found is None:
        return "later", False     # a critique that corrected nothing (e.g. a wrong final answer line)
    k, value = int(found[1]), found[2]
    problem = problem_from_operands(tuple(int(x) for x in question.split("+")))
    first_wrong = check_steps(problem, refinement)[-1]
    if first_wrong.ok or first_wrong.index > k:
        return "later", False
    if first_wrong.index < k:
        return "earlier", False
    written = first_wrong.text.rpartition("=")[2]
    tens_only = len(written) == len(value) >= 2 and written[:-2] == value[:-2] and written[-1] == value[-1] \
        and written[-2] != value[-2]
    return "ignored", tens_only


def windows(run: Path, width: int) -> list[dict]:
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    last = max(m["step"] for m in metrics)
    rows = []
    for start in range(1, last + 1, width):
        steps = range(start, min(start + width, last + 1))
        counts, tens = Counter(), 0
        for group in samples:
            if group["step"] in steps:
                for r in group.get("refinements", []):
                    category, tens_only = classify(group["question"], r["critique"], r["text"], r["reward"])
                    counts[category] += 1
                    tens += tens_only
        logged = [m for m in metrics if m["step"] in steps]
        rates = [m["refine/success_rate"] for m in logged if "refine/success_rate" in m]
        rows.append({
            "steps": f"{steps[0]}-{steps[-1]}",
            "refinements": sum(counts.values()),
            **{c: counts[c] for c in CATEGORIES},
            "ignored_tens_only": tens,
            "success_rate": sum(rates) / len(rates) if rates else None,
            "triggered_groups": sum(m.get("refine/triggered_groups", 0) for m in logged) / max(len(logged), 1),
            "train_hard": sum(m.get("accuracy/train_hard", 0) for m in logged) / max(len(logged), 1),
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a Critique-GRPO run directory of the synthetic task")
    parser.add_argument("--window", type=int, default=10, help="steps per row [10]")
    args = parser.parse_args()
    if not (args.run / "samples.jsonl").is_file():
        print(f"{args.run}: no samples.jsonl (is this a run directory?)", file=sys.stderr)
        return 2
    rows = windows(args.run, args.window)
    print("| steps | refine ok (all) | logged refinements | correct | ignored the correction (tens digit only) "
          "| later error | earlier error | triggered groups / step | train hard acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = "—" if r["success_rate"] is None else f"{r['success_rate']:.2f}"
        print(f"| {r['steps']} | {ok} | {r['refinements']} | {r['correct']} | {r['ignored']} ({r['ignored_tens_only']}) "
              f"| {r['later']} | {r['earlier']} | {r['triggered_groups']:.1f} | {r['train_hard']:.2f} |")
    print(json.dumps({"run": str(args.run), "window": args.window, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
