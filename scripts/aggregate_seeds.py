"""Mean ± std (and min..max) over pipeline runs of different seeds, as a Markdown table.

    python scripts/aggregate_seeds.py runs/seed0 runs/seed1 runs/seed2

Reads each directory's summary.json; the last line of output is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METHODS = {"grpo": "GRPO", "critique_grpo": "Critique-GRPO", "grpo_equal_compute": "GRPO, equal compute"}
COLUMNS = ("easy_pass1", "hard_pass1", "easy_pass_at_k", "hard_pass_at_k", "final_entropy", "steps", "seconds_per_step")


def describe(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(dirs: list[str]) -> None:
    summaries = [json.loads((Path(d) / "summary.json").read_text()) for d in dirs]
    k = summaries[0]["methods"]["grpo"]["k"]
    table = {m: {c: describe([s["methods"][m][c] for s in summaries]) for c in COLUMNS}
             for m in METHODS if all(m in s["methods"] for s in summaries)}
    print(f"| method ({len(dirs)} seeds) | " + " | ".join(c.replace("_at_k", f"@{k}") for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for m, row in table.items():
        cells = [f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f} ({row[c]['min']:.2f}–{row[c]['max']:.2f})" for c in COLUMNS]
        print(f"| {METHODS[m]} | " + " | ".join(cells) + " |")
    walls = [s["wall_seconds"] for s in summaries]
    print(f"\npipeline wall time per seed: {', '.join(f'{w / 60:.1f} min' for w in walls)}")
    print(json.dumps({"seeds": [s["seed"] for s in summaries], "k": k, "wall_seconds": walls, "methods": table}))


if __name__ == "__main__":
    main(sys.argv[1:])
