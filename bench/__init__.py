"""Benchmarks for bitty: ``python -m bench`` (``--quick`` for a short run)."""
