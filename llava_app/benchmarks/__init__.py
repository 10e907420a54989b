"""Benchmarks: each module prints a table and writes JSON (python -m llava_app.benchmarks.<name>)."""
