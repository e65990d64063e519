"""Peak resident memory of `critique-rl eval` on an OlympiadBench-shaped dataset, default settings.

    python scripts/bench_eval_memory.py [--problems 675] [--max-chars 4415] [--model DIR]

In a temporary directory (never in the repository) it writes a JSONL of --problems rows shaped
like OlympiadBench's test file (``question`` of up to --max-chars characters, ``final_answer`` a
one-item list, ``solution`` a list of strings) and its dataset spec, builds a model when --model
is not given (``critique-rl warmstart --config PRESET``, --warmstart-steps steps: memory does
not depend on training, and an untrained model rarely stops early, so every completion runs to
its limit), then runs

    critique-rl eval --model MODEL --dataset SPEC.yaml --out DIR [OVERRIDES]

as a child process with the default config. Reported: the child's peak resident memory
(``ru_maxrss`` from ``wait4``: its largest process), the sum of the peaks of the child and its
descendants (the verifier workers; Linux), the wall time, the problem and sample counts and the
prompts the engine cut to the context. The last line of output is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLI = [sys.executable, "-m", "critique_rl.cli"]
FILLER = ("Let $ABC$ be a triangle with circumcentre $O$ and let $n$ be a positive integer such that the sum of "
          "the first $n$ odd numbers exceeds $2^{k}$; determine all real $x$ with $x^2 - 5x + 6 = 0$. ")


def write_dataset(folder: Path, problems: int, max_chars: int, seed: int = 0) -> Path:
    """The JSONL and its dataset spec; question lengths spread from 200 characters to ``max_chars`` (the last row)."""
    rng = random.Random(seed)
    rows = []
    for i in range(problems):
        length = max_chars if i == problems - 1 else rng.randint(min(200, max_chars), max_chars)
        question = (f"Problem {i}. " + FILLER * (length // len(FILLER) + 1))[:length - 1] + "?"
        answer = str(rng.randint(1, 999))
        rows.append({"id": i, "question": question, "final_answer": [f"${answer}$"],
                     "solution": [f"Step one gives {answer}.", f"Hence the answer is ${answer}$."]})
    data = folder / "olympiad_like.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = folder / "olympiad_like.yaml"
    spec.write_text(f"path: {data}\nsplit: test\nquestion_field: question\nanswer_from: field\n"
                    "answer_field: final_answer\nsolution_field: solution\n")
    return spec


def descendants(root: int) -> list[int]:
    """``root`` and the processes under it, from /proc (just ``root`` where /proc is absent)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1]) if stat else -1
        except (OSError, ValueError, IndexError):
            continue                                  # the process ended while we looked
    tree, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree += children
        frontier += children
    return tree


def high_water_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), 0 when it is gone."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def run_measured(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` with stdout+stderr to ``log``: its wall time, ``ru_maxrss`` (its largest process)
    and the sum of the peaks of all its processes (VmHWM, read every 0.2 s), an upper bound of
    their resident memory together that no spike between two reads can hide."""
    peaks: dict[int, float] = {}
    t = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                for pid in descendants(proc.pid):
                    peaks[pid] = max(peaks.get(pid, 0.0), high_water_mb(pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)      # this child's own rusage, not the model build's
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024      # ru_maxrss: bytes on macOS, KiB on Linux
    peak = usage.ru_maxrss * 1024 / scale / 1024
    peaks[proc.pid] = max(peaks.get(proc.pid, 0.0), peak)          # its last 0.2 s included
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak, 1),
            "sum_of_process_peaks_mb": round(sum(peaks.values()), 1), "processes": len(peaks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=675, help="rows of the dataset (OlympiadBench test: 675)")
    parser.add_argument("--max-chars", type=int, default=4415, help="longest question (OlympiadBench test: 4,415)")
    parser.add_argument("--model", help="model directory; default: build one with critique-rl warmstart")
    parser.add_argument("--preset", default="toy", help="config of the warm start built without --model [toy: the embedded default]")
    parser.add_argument("--warmstart-steps", type=int, default=1, help="its supervised steps")
    parser.add_argument("overrides", nargs="*", help="eval overrides (none: default settings), e.g. benchmarks.num_samples=2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-eval-memory-") as tmp:
        tmp = Path(tmp)
        spec = write_dataset(tmp, args.problems, args.max_chars)
        model = args.model
        if model is None:
            built = subprocess.run([*CLI, "warmstart", "--config", args.preset, "--out", str(tmp / "warm"),
                                    f"warmstart.steps={args.warmstart_steps}"], check=True, capture_output=True, text=True)
            model = built.stdout.strip().splitlines()[-1].removeprefix("warm-start model saved to ")
        cmd = [*CLI, "eval", "--model", model, "--dataset", str(spec), "--out", str(tmp / "eval"), *args.overrides]
        log = tmp / "eval.log"
        measured = run_measured(cmd, log)
        text = log.read_text()
        cut = re.search(r"(\d+) of (\d+) prompts are longer than the (\d+) tokens", text)
        samples = sum(1 for _ in (tmp / "eval" / "olympiad_like.samples.jsonl").open())
        results = json.loads((tmp / "eval" / "results.json").read_text())
    print(text[-2000:])
    print(json.dumps({
        "problems": args.problems, "max_question_chars": args.max_chars, "samples": samples,
        **measured, "prompts_cut_first_call": int(cut.group(1)) if cut else 0,
        "prompt_limit_tokens": int(cut.group(3)) if cut else None,
        "command": "critique-rl eval --model MODEL --dataset SPEC.yaml --out DIR " + " ".join(args.overrides),
        "results": results,
    }))


if __name__ == "__main__":
    main()
