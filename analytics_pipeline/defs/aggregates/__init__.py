"""Aggregates domain: daily tables recomputed in the warehouse by SQL."""

from __future__ import annotations

from analytics_pipeline.defs.aggregates.assets import aggregates_definitions

__all__ = ["aggregates_definitions"]
