"""The queuepipe benchmark harness: ``python -m benchmarks.run [--quick]`` (see BENCHMARKS.md)."""
