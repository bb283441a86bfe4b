"""Ingest domain: Kinesis stream -> SQS batch queue -> `events` / `events_quarantine`."""

from __future__ import annotations

import dagster as dg

from analytics_pipeline.defs.ingest.assets import external_assets, load_batches_asset
from analytics_pipeline.defs.ingest.checks import no_duplicate_message_ids_check
from analytics_pipeline.defs.ingest.sensors import sqs_batches_sensor
from analytics_pipeline.settings import Settings

LOAD_JOB_NAME = "load_batches_job"


def ingest_definitions(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.Definitions:
    load_batches = load_batches_asset(settings, partitions_def)
    load_job = dg.define_asset_job(
        LOAD_JOB_NAME,
        selection=dg.AssetSelection.assets(load_batches),
        partitions_def=partitions_def,
        executor_def=dg.in_process_executor,  # one process per run: ~0.2 s instead of seconds
        description="Loads SQS batches of one day partition exactly once; started by the sensor.",
    )
    return dg.Definitions(
        assets=[*external_assets(settings), load_batches],
        asset_checks=[no_duplicate_message_ids_check(settings, partitions_def)],
        jobs=[load_job],
        sensors=[sqs_batches_sensor(settings, load_job, partitions_def)],
    )
