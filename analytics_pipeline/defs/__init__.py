"""Dagster definitions, one folder per domain: `ingest` (stream, queue, loading) and `aggregates`.

`analytics_pipeline.definitions` assembles them; `resources.py` is the one place that picks
resources per environment. Plain logic lives outside this folder (`loader/`, `warehouse/`).
"""
