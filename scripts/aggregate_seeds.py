"""Mean ± std (and min..max) over pipeline runs of different seeds, as a Markdown table, then the
verdict over the seeds (the same words as a pipeline's report.md, with mean and spread).

    python scripts/aggregate_seeds.py runs/seed0 runs/seed1 runs/seed2

Reads each directory's summary.json; the last line of output is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from critique_rl.report import EARLY_KEY, METHOD_LABELS, column_title, interpretation, seeds_note, verdict_values

COLUMNS = ("easy_pass1", "hard_pass1", "easy_pass_at_k", "hard_pass_at_k", "final_entropy", "steps", "seconds_per_step")
SPLITS = ("hard", "easy")


def describe(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(dirs: list[str]) -> None:
    summaries = [json.loads((Path(d) / "summary.json").read_text()) for d in dirs]
    seeds = [s["seed"] for s in summaries]
    if len(set(seeds)) < len(seeds):
        sys.exit(f"aggregate_seeds: the directories repeat a seed ({', '.join(map(str, seeds))}); give one per seed")
    k = summaries[0]["methods"]["grpo"]["k"]
    methods = [m for m in METHOD_LABELS if all(m in s["methods"] for s in summaries)]
    # The early evaluation (e.g. hard pass@1 at step 50), when every summary has the same one.
    early = [c for c in summaries[0]["methods"]["grpo"] if EARLY_KEY.fullmatch(c)
             and all(c in s["methods"][m] for s in summaries for m in methods)]
    columns = [*COLUMNS[:2], *early, *COLUMNS[2:]]
    table = {m: {c: describe([s["methods"][m][c] for s in summaries]) for c in columns} for m in methods}
    print(f"| method ({len(dirs)} seeds) | " + " | ".join(column_title(c, k) for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for m, row in table.items():
        cells = [f"{row[c]['mean']:.3f} ± {row[c]['std']:.3f} ({row[c]['min']:.2f}–{row[c]['max']:.2f})" for c in columns]
        print(f"| {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
    per_seed = {m: [verdict_values({c: s["methods"][m][c] for c in columns}, list(SPLITS)) for s in summaries]
                for m in methods}
    values = {METHOD_LABELS[m]: {split: [v[split][0] for v in seeds_values] for split in seeds_values[0]}
              for m, seeds_values in per_seed.items()}
    splits = list(next(iter(values.values())))
    pairs = [(METHOD_LABELS["critique_grpo"], METHOD_LABELS[m]) for m in ("grpo", "grpo_equal_compute") if m in methods]
    print("\n" + "\n".join(interpretation(values, pairs, splits, seeds_note(seeds))))
    walls = [s["wall_seconds"] for s in summaries]
    print(f"\npipeline wall time per seed: {', '.join(f'{w / 60:.1f} min' for w in walls)}")
    print(json.dumps({"seeds": seeds, "k": k, "wall_seconds": walls, "methods": table}))


if __name__ == "__main__":
    main(sys.argv[1:])
