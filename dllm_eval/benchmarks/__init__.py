"""Benchmark scripts: each prints a table and can write it under results/."""
