"""Throughput of the openai critic backend against a local server with injected latency.

The stub server runs in its own process (like any real endpoint, it does not share our GIL);
each request takes ``--latency`` seconds there. At concurrency c, N = c * --per-slot critiques
ideally take N * latency / c seconds. Prints one line per concurrency, then one JSON
object on the last line:

    {"latency_s": 0.2, "results": [{"concurrency": 1, "critiques_per_s": ..., "ratio_to_ideal": ...}, ...]}

    python scripts/bench_critic.py [--latency 0.2] [--concurrency 1 8 32 64] [--per-slot 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from critique_rl.config import load_config
from critique_rl.critics import CritiqueRequest, build_critic


def bench(base_url: str, concurrency: int, n: int, latency: float) -> dict:
    cfg = load_config("toy", ["critic.backend=openai", "critic.model=stub", f"critic.base_url={base_url}",
                              "critic.api_key_env=", "critic.cache=false", f"critic.max_concurrency={concurrency}"])
    critic = build_critic(cfg.critic, cfg.task.name)
    # Distinct wrong attempts: the stub answers 'Verdict: wrong', so every critique is accepted at once.
    requests = [CritiqueRequest(f"{i}+1", f"{i}+1={i}; answer {i}", str(i + 1), False) for i in range(n)]
    critic.critique(requests[:concurrency])              # open the connections first
    critic.metrics()
    start = time.perf_counter()
    critic.critique(requests)
    elapsed = time.perf_counter() - start
    metrics = critic.metrics()
    critic.close()
    assert metrics["critic/requests"] == n and metrics["critic/fallbacks"] == 0, metrics
    ideal = n * latency / concurrency
    return {"concurrency": concurrency, "critiques": n, "seconds": round(elapsed, 3),
            "critiques_per_s": round(n / elapsed, 2), "ratio_to_ideal": round(ideal / elapsed, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds [0.2]")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--per-slot", type=int, default=8, help="critiques per concurrency slot [8]")
    args = parser.parse_args()
    results = []
    server = subprocess.Popen([sys.executable, "-m", "critique_rl.critics.stub_server", "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        for c in args.concurrency:
            r = bench(base_url, c, c * args.per_slot, args.latency)
            print(f"concurrency {c:>3}: {r['critiques']:>4} critiques in {r['seconds']:.2f} s = "
                  f"{r['critiques_per_s']:.1f}/s, {100 * r['ratio_to_ideal']:.0f}% of ideal")
            results.append(r)
    finally:
        server.terminate()
        server.wait()
    print(json.dumps({"latency_s": args.latency, "results": results}))


if __name__ == "__main__":
    main()
