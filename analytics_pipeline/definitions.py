"""The code location: every Dagster definition, with resources for the configured environment."""

from __future__ import annotations

import dagster as dg

from analytics_pipeline.defs.aggregates import aggregates_definitions
from analytics_pipeline.defs.automation import automation_sensor
from analytics_pipeline.defs.ingest import ingest_definitions
from analytics_pipeline.defs.operations import operations_definitions
from analytics_pipeline.defs.partitions import day_partitions
from analytics_pipeline.defs.resources import resources_for
from analytics_pipeline.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions_def = day_partitions(settings)
    return dg.Definitions.merge(
        ingest_definitions(settings, partitions_def),
        aggregates_definitions(settings, partitions_def),
        operations_definitions(settings),
        dg.Definitions(
            sensors=[automation_sensor()],
            resources=resources_for(settings),
            # Runs launched from the UI (a partition, a backfill, a check) are one step or a
            # few: one process, not one per step (~0.2 s instead of several seconds a step).
            executor=dg.in_process_executor,
        ),
    )


defs = build_definitions(Settings.from_env())
