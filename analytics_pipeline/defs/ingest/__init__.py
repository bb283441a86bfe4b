"""Ingest domain: Kinesis stream -> SQS batch queue -> `events` / `events_quarantine`, with the
sensors that keep the load loop running and that show the path's health."""

from __future__ import annotations

import dagster as dg

from analytics_pipeline.defs.ingest.assets import external_assets, load_batches_asset
from analytics_pipeline.defs.ingest.checks import no_duplicate_message_ids_check
from analytics_pipeline.defs.ingest.health import health_checks, health_sensor, row_count_sensor
from analytics_pipeline.defs.ingest.loop import LOOP_JOB_NAME, loop_job, loop_sensor
from analytics_pipeline.settings import Settings

__all__ = ["LOOP_JOB_NAME", "ingest_definitions"]


def ingest_definitions(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.Definitions:
    job = loop_job(settings, partitions_def)
    return dg.Definitions(
        assets=[*external_assets(settings), load_batches_asset(settings, partitions_def)],
        asset_checks=[
            no_duplicate_message_ids_check(settings, partitions_def),
            *health_checks(settings),
        ],
        jobs=[job],
        sensors=[loop_sensor(settings, job), health_sensor(settings), row_count_sensor(settings)],
    )
