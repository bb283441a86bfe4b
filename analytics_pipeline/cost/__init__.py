"""`analytics-pipeline cost`: the monthly AWS + BigQuery bill for a volume of events.

No Dagster and no cloud SDK here: the model runs the pipeline's own encoder, parser and packer on
a small sample to measure bytes, reads its parameters from `Settings` and the code's constants,
and prices the request pattern (`model.py`; its inputs and output in `terms.py`) with the table
in `prices.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.cost import sizes
from analytics_pipeline.cost.cron import schedule
from analytics_pipeline.cost.model import WAREHOUSES, estimate
from analytics_pipeline.cost.terms import Assumptions, Estimate, Item, PipelineParameters
from analytics_pipeline.ingest.sinks import SQS_BATCH_MAX_BYTES, SQS_BATCH_MAX_ENTRIES
from analytics_pipeline.loader.batch_queue import SQS_BATCH
from analytics_pipeline.loader.health import CLOUDWATCH_PERIOD_SECONDS
from analytics_pipeline.loader.loop import MAX_WAIT_SECONDS
from analytics_pipeline.settings import Settings

__all__ = [
    "WAREHOUSES",
    "Assumptions",
    "Estimate",
    "Item",
    "PipelineParameters",
    "estimate",
    "estimate_for_settings",
    "pipeline_parameters",
]


def pipeline_parameters(settings: Settings) -> PipelineParameters:
    return PipelineParameters(
        trigger_batch_size=settings.trigger_batch_size,
        sqs_message_max_bytes=settings.sqs_message_max_bytes,
        sqs_batch_max_entries=SQS_BATCH_MAX_ENTRIES,
        sqs_batch_max_bytes=SQS_BATCH_MAX_BYTES,
        sqs_receive_max_messages=SQS_BATCH,
        load_max_messages=settings.load_max_messages,
        loop_max_wait_seconds=MAX_WAIT_SECONDS,
        duplicate_check=schedule(settings.duplicate_check_cron),
        key_retention_days=settings.loader_retention_days,
        bigquery_streams_per_hour=settings.bigquery_streams_per_hour,
        health_interval_seconds=settings.health_interval_seconds,
        health_cloudwatch_every_seconds=(
            max(settings.health_interval_seconds, CLOUDWATCH_PERIOD_SECONDS)
            if settings.health_cloudwatch
            else 0
        ),
    )


def estimate_for_settings(
    settings: Settings,
    events_per_month: int,
    warehouse: str | None = None,
    overrides: Sequence[str] = (),
) -> Estimate:
    """Measure the bytes with these settings' limits, then price `events_per_month`."""
    assume = Assumptions().with_overrides(overrides)
    measured = sizes.measure(
        assume.events_per_blob,
        Limits.from_settings(settings),
        settings.sqs_message_max_bytes,
        settings.bucket,
    )
    return estimate(
        events_per_month,
        warehouse or settings.warehouse,
        pipeline_parameters(settings),
        measured,
        assume,
    )
