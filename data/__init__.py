"""The benchmark registry (benchmarks.yaml), installed as the package ``critique_rl.data``."""
