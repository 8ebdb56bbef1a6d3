"""Benchmark scripts (run them directly: `python benchmarks/NAME.py`)."""
