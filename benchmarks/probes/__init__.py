"""One-off probes behind BENCHMARKS.md's "where the time goes": not harness rows.

Each runs on its own, e.g. ``python -m benchmarks.probes.w1_ceiling --rounds 3``.
"""
