"""The ingest domain's assets: the stream and queue (external), and `events` /
`events_quarantine`, which the load loop materializes micro-batch by micro-batch.

Materializing `events` (or a day of it) from the UI brings it up to date: when no loop holds
the loader store the run loads what waits in the queue itself; when the loop runs, it waits
until the loop has emptied the queue. Either way every batch is loaded once, by one loader.
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import BatchQueueResource, WarehouseResource
from analytics_pipeline.loader import LoadOutcome
from analytics_pipeline.loader.loop import open_loader, run_loop
from analytics_pipeline.loader.store import StoreBusyError
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import LoadResult

KINESIS_STREAM = dg.AssetKey("kinesis_stream")
SQS_BATCH_QUEUE = dg.AssetKey("sqs_batch_queue")
EVENTS = dg.AssetKey("events")
EVENTS_QUARANTINE = dg.AssetKey("events_quarantine")
DAILY_EVENT_COUNTS = dg.AssetKey("daily_event_counts")
DAILY_ACTIVE_USERS = dg.AssetKey("daily_active_users")
KIND_BY_ASSET = {EVENTS: BatchKind.EVENTS, EVENTS_QUARANTINE: BatchKind.QUARANTINE}
ASSET_BY_KIND = {kind: key for key, kind in KIND_BY_ASSET.items()}

COUNTS_RECONCILE_CHECK = "counts_reconcile"
DRAIN_TIMEOUT_SECONDS = 300.0  # an on-demand run waits this long for the queue to empty


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


def load_metadata(
    result: LoadResult, quarantined: LoadResult, outcome: LoadOutcome | None = None
) -> dict[str, float | int]:
    """What one load did, as materialization metadata (numbers, so the UI plots them)."""
    metadata: dict[str, float | int] = {
        "rows_loaded": result.rows_inserted,
        "duplicates_skipped": result.duplicates_skipped,
        "rows_declared": result.rows_declared,
        "rejected": quarantined.rows_received,
        "batches": result.batches,
        "batches_already_loaded": result.batches_already_loaded,
        "batches_failed": len(result.failed_batch_ids),
    }
    for name in ("p50", "p95", "max"):
        value = getattr(result, f"seconds_from_sent_at_{name}")
        if value is not None:
            metadata[f"seconds_from_sent_at_{name}"] = round(value, 3)
    if outcome is not None:
        metadata["bytes"] = outcome.bytes
        metadata["load_seconds"] = round(outcome.seconds, 3)
    return metadata


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
        batch_queue: BatchQueueResource,
        warehouse: WarehouseResource,
    ) -> Iterator[Any]:
        queue = batch_queue.get_queue()
        total = LoadOutcome()
        try:
            with open_loader(settings, warehouse=warehouse.get_warehouse(), queue=queue) as loader:
                # No loop runs: load what waits, until a receive finds nothing.
                deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
                while time.monotonic() < deadline:
                    outcomes = list(run_loop(loader, settings, seconds=1))
                    if not outcomes:
                        break
                    for outcome in outcomes:
                        total.add(outcome)
        except StoreBusyError:
            # The loop loads: wait until it has emptied the queue.
            context.log.info("the load loop is running: waiting for the queue to empty")
            deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
            while any(queue.depth().values()) and time.monotonic() < deadline:
                time.sleep(1.0)
        quarantined = total.result(BatchKind.QUARANTINE)
        for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
            result = total.result(KIND_BY_ASSET[key])
            checks = []
            if key == EVENTS and dg.AssetCheckKey(EVENTS, COUNTS_RECONCILE_CHECK) in (
                context.selected_asset_check_keys
            ):
                checks.append(
                    dg.AssetCheckResult(
                        asset_key=EVENTS,
                        check_name=COUNTS_RECONCILE_CHECK,
                        passed=result.reconciles,
                        metadata={"rows_declared": result.rows_declared},
                    )
                )
            yield dg.MaterializeResult(
                asset_key=key,
                metadata=load_metadata(result, quarantined, total),
                check_results=checks,
            )
        failed = sorted(b for result in total.results.values() for b in result.failed_batch_ids)
        if failed:
            raise dg.Failure(
                f"{len(failed)} batches failed to load and stay queued: {', '.join(failed)}; "
                "`analytics-pipeline dlq list` shows why once they reach the dead-letter queue",
                allow_retries=False,  # an op retry would fail the same way; SQS redelivers
            )

    return load_batches
