"""The ingest domain's assets: the stream and queue (external) and the loading of batches.

One op loads both `events` and `events_quarantine`: a batch message is loaded and then deleted
once, whichever table its rows go to. Each micro-batch is one more materialization of its day.
"""

import typing

import dagster as dg
import pydantic
from pydantic import Field

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import BatchQueueResource, WarehouseResource
from analytics_pipeline.loader import BatchRef, drain_day, load_refs
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import LoadResult

KINESIS_STREAM = dg.AssetKey("kinesis_stream")
SQS_BATCH_QUEUE = dg.AssetKey("sqs_batch_queue")
EVENTS = dg.AssetKey("events")
EVENTS_QUARANTINE = dg.AssetKey("events_quarantine")
KIND_BY_ASSET = {EVENTS: BatchKind.EVENTS, EVENTS_QUARANTINE: BatchKind.QUARANTINE}
ASSET_BY_KIND = {kind: key for key, kind in KIND_BY_ASSET.items()}

COUNTS_RECONCILE_CHECK = "counts_reconcile"


# One SQS message to load: a `BatchRef`, field for field (the sensor fills these in).
BatchMessage = pydantic.create_model(
    "BatchMessage",
    __base__=dg.Config,
    **{name: (kind, ...) for name, kind in typing.get_type_hints(BatchRef).items()},
)


class LoadBatchesConfig(dg.Config):
    messages: list[BatchMessage] = Field(  # type: ignore[valid-type]
        default=[],
        description="Batches to load. Empty (a run started from the UI): drain the queue of this "
        "partition's batches.",
    )


def external_assets(settings: Settings) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            KINESIS_STREAM,
            group_name="ingest",
            kinds={"kinesis"},
            description="Client blobs (gzip JSON batches of events), one Kinesis record each.",
            metadata={"stream_name": settings.stream_name},
        ),
        dg.AssetSpec(
            SQS_BATCH_QUEUE,
            deps=[KINESIS_STREAM],
            group_name="ingest",
            kinds={"sqs", "lambda"},
            description="Validated, deduplicated, compressed batches written by the Lambda "
            "(rejected events travel as quarantine batches).",
            metadata={"queue_name": settings.queue_name, "dead_letter_queue": settings.dlq_name},
        ),
    ]


def load_batches_asset(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="load_batches",
        specs=[
            dg.AssetSpec(
                EVENTS,
                deps=[SQS_BATCH_QUEUE],
                group_name="warehouse",
                kinds={settings.warehouse},
                description="Every valid event exactly once, by UTC day of `timestamp`.",
                skippable=True,
            ),
            dg.AssetSpec(
                EVENTS_QUARANTINE,
                deps=[SQS_BATCH_QUEUE],
                group_name="warehouse",
                kinds={settings.warehouse},
                description="Rejected events and blobs with a machine-readable reason, by UTC day "
                "of receipt.",
                skippable=True,
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                COUNTS_RECONCILE_CHECK,
                asset=EVENTS,
                description="Rows the batches declared = rows inserted + duplicates skipped.",
            ),
        ],
        partitions_def=partitions_def,
        can_subset=True,
        retry_policy=WAREHOUSE_RETRY_POLICY,
    )
    def load_batches(
        context: dg.AssetExecutionContext,
        config: LoadBatchesConfig,
        batch_queue: BatchQueueResource,
        warehouse: WarehouseResource,
    ):
        day = context.partition_key
        kinds = {KIND_BY_ASSET[key] for key in context.selected_asset_keys}
        queue = batch_queue.get_queue()
        if config.messages:
            refs = [BatchRef(**message.model_dump()) for message in config.messages]
            foreign = [ref for ref in refs if ref.day != day or BatchKind(ref.kind) not in kinds]
            if foreign:
                raise dg.Failure(f"{len(foreign)} batches do not belong to {day} / {kinds}")
        else:
            refs = drain_day(
                queue,
                day,
                kinds,
                max_messages=settings.sensor_max_messages,
                visibility_timeout=settings.sqs_visibility_seconds,
            )
        store = warehouse.get_warehouse()
        store.ensure_schema()
        results = load_refs(queue, store, refs, settings.dedupe_window_days)
        empty = LoadResult()
        quarantined = results.get(BatchKind.QUARANTINE, empty)
        for kind in sorted(kinds):
            result = results.get(kind, empty)
            key = ASSET_BY_KIND[kind]
            metadata = _metadata(result, quarantined)
            check_results = []
            if kind is BatchKind.EVENTS:
                check_results = _event_checks(context, result)
            context.log.info("%s %s: %s", key.to_user_string(), day, metadata)
            yield dg.MaterializeResult(
                asset_key=key, metadata=metadata, check_results=check_results
            )
        failed = sorted(b for result in results.values() for b in result.failed_batch_ids)
        if failed:
            # After the yields: the batches that did load are materialized; this run still
            # shows as failed, and the failed messages are redelivered (then dead-lettered).
            raise dg.Failure(
                f"{len(failed)} batches failed to load and stay queued: {', '.join(failed)}; "
                "`analytics-pipeline dlq list` shows why once they reach the dead-letter queue",
                allow_retries=False,  # an op retry would fail the same way; SQS redelivers
            )

    return load_batches


def _metadata(result: LoadResult, quarantined: LoadResult) -> dict[str, float | int]:
    metadata: dict[str, float | int] = {
        "rows_loaded": result.rows_inserted,
        "duplicates_skipped": result.duplicates_skipped,
        "rows_declared": result.rows_declared,
        "rejected": quarantined.rows_received,
        "batches": result.batches,
        "batches_already_loaded": result.batches_already_loaded,
        "batches_failed": len(result.failed_batch_ids),
    }
    if result.seconds_from_sent_at_p50 is not None:
        metadata["seconds_from_sent_at_p50"] = round(result.seconds_from_sent_at_p50, 3)
    if result.seconds_from_sent_at_max is not None:
        metadata["seconds_from_sent_at_max"] = round(result.seconds_from_sent_at_max, 3)
    return metadata


def _event_checks(
    context: dg.AssetExecutionContext, result: LoadResult
) -> list[dg.AssetCheckResult]:
    """Checks that cost nothing: computed from the load itself, so they run on every batch."""
    selected = context.selected_asset_check_keys
    checks = [
        dg.AssetCheckResult(
            asset_key=EVENTS,
            check_name=COUNTS_RECONCILE_CHECK,
            passed=result.reconciles,
            metadata={
                "rows_declared": result.rows_declared,
                "rows_received": result.rows_received,
                "rows_inserted": result.rows_inserted,
                "duplicates_skipped": result.duplicates_skipped,
            },
        ),
    ]
    return [
        check
        for check in checks
        if dg.AssetCheckKey(EVENTS, check.check_name) in selected  # type: ignore[arg-type]
    ]
