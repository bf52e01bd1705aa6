"""Benchmarks of the engine and the service; run each with `python -m benchmarks.<name> [--quick]`.

Results (tables, plots, the exact command and the machine) are collected in docs/benchmarks.md.
"""
