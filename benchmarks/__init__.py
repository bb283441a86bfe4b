"""Benchmarks: run `make bench` (benchmarks/run.py); the suite runs them once on tiny inputs."""
