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

from analytics_pipeline.client.sender import KinesisSender
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.catalogue import (
    code_reference,
    owners,
    table_kinds,
    table_metadata,
)
from analytics_pipeline.defs.ingest.keys import (
    COUNTS_RECONCILE_CHECK,
    EVENTS,
    EVENTS_QUARANTINE,
    KINESIS_STREAM,
    QUARANTINE_RATE_CHECK,
    SQS_BATCH_QUEUE,
)
from analytics_pipeline.defs.ingest.quarantine_rate import (
    QUARANTINE_RATE_DESCRIPTION,
    RejectionWindow,
)
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import BatchQueueResource, WarehouseResource
from analytics_pipeline.ingest.handler import process_event
from analytics_pipeline.loader import Loader, LoadOutcome
from analytics_pipeline.loader.loop import open_loader, run_loop
from analytics_pipeline.loader.plan import plan_load
from analytics_pipeline.loader.store import StoreBusyError
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import LoadResult
from analytics_pipeline.warehouse.tables import EVENTS_TABLE, QUARANTINE_TABLE

KIND_BY_ASSET = {EVENTS: BatchKind.EVENTS, EVENTS_QUARANTINE: BatchKind.QUARANTINE}
ASSET_BY_KIND = {kind: key for key, kind in KIND_BY_ASSET.items()}

DRAIN_TIMEOUT_SECONDS = 300.0  # an on-demand run waits this long for the queue to empty


def external_assets(settings: Settings) -> list[dg.AssetSpec]:
    """The stream and the queue: Dagster observes them (the health sensor), never writes them."""
    return [
        dg.AssetSpec(
            KINESIS_STREAM,
            group_name="ingest",
            kinds={"kinesis"},
            owners=owners(settings),
            description="Client blobs (gzip JSON batches of events), one Kinesis record each. "
            "Observed every ANALYTICS_HEALTH_INTERVAL_SECONDS: `iterator_age_seconds` is how far "
            "behind the newest record the Lambda's trigger reads (rising: the Lambda cannot keep "
            "up, or it fails and retries a batch).",
            metadata={
                "stream_name": settings.stream_name,
                "dagster/uri": f"kinesis://{settings.aws_region}/{settings.stream_name}",
                "dagster/code_references": code_reference(KinesisSender.send),
            },
        ),
        dg.AssetSpec(
            SQS_BATCH_QUEUE,
            deps=[KINESIS_STREAM],
            group_name="ingest",
            kinds={"sqs", "lambda"},
            owners=owners(settings),
            description="Validated, deduplicated, compressed batches written by the Lambda "
            "(rejected events travel as quarantine batches). Observed every "
            "ANALYTICS_HEALTH_INTERVAL_SECONDS: `waiting` (visible + in flight), "
            "`dead_letters`, and on AWS the age of the oldest message.",
            metadata={
                "queue_name": settings.queue_name,
                "dead_letter_queue": settings.dlq_name,
                "dagster/uri": f"sqs://{settings.aws_region}/{settings.queue_name}",
                "dagster/code_references": code_reference(process_event),
            },
        ),
    ]


def load_metadata(
    result: LoadResult,
    rejected: int,
    *,
    bytes_loaded: int | None = None,
    load_seconds: float | None = None,
) -> dict[str, float | int]:
    """What one load did to one partition, as materialization metadata (numbers, so the UI
    plots them); `rejected`: the rows the same load quarantined for that day."""
    metadata: dict[str, float | int] = {
        "rows_loaded": result.rows_inserted,
        "duplicates_skipped": result.duplicates_skipped,
        "rows_declared": result.rows_declared,
        "rejected": rejected,
        "batches": result.batches,
        "batches_already_loaded": result.batches_already_loaded,
        "batches_failed": len(result.failed_batch_ids),
    }
    for name in ("p50", "p95", "max"):
        value = getattr(result, f"seconds_from_sent_at_{name}")
        if value is not None:
            metadata[f"seconds_from_sent_at_{name}"] = round(value, 3)
    if bytes_loaded is not None:
        metadata["bytes"] = bytes_loaded
    if load_seconds is not None:
        metadata["load_seconds"] = round(load_seconds, 3)
    return metadata


def _table_spec(
    settings: Settings,
    key: dg.AssetKey,
    table: str,
    description: str,
    code_references: dg.CodeReferencesMetadataValue,
) -> dg.AssetSpec:
    """A warehouse table the load loop writes; skippable, since a load touches only its days."""
    return dg.AssetSpec(
        key,
        deps=[SQS_BATCH_QUEUE],
        group_name="warehouse",
        kinds=table_kinds(settings),
        owners=owners(settings),
        description=description,
        metadata={**table_metadata(settings, table), "dagster/code_references": code_references},
        skippable=True,
    )


def load_batches_asset(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="load_batches",
        specs=[
            _table_spec(
                settings,
                EVENTS,
                EVENTS_TABLE,
                "Every valid event exactly once, by UTC day of `timestamp`. Each load is one "
                "more materialization of the days it wrote, with its numbers (rows_loaded, "
                "duplicates_skipped, rejected, bytes, seconds_from_sent_at_p50/p95): the Plots "
                "tab shows them over time.",
                code_reference(run_loop, Loader.load, plan_load),
            ),
            _table_spec(
                settings,
                EVENTS_QUARANTINE,
                QUARANTINE_TABLE,
                "Rejected events and blobs with a machine-readable reason, by UTC day of "
                "receipt. `quarantine_replay_job` parses a reason's rows again after a fix.",
                code_reference(run_loop, Loader.load),
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                COUNTS_RECONCILE_CHECK,
                asset=EVENTS,
                description="Per load and day: the rows the Lambda declared = rows inserted + "
                "duplicates skipped. Fails when a batch failed to load (it stays in SQS, is "
                "retried, and after ANALYTICS_QUEUE_MAX_RECEIVES receives waits in the "
                "dead-letter queue: see `dead_letter_queue_empty`) or rows went missing.",
            ),
            dg.AssetCheckSpec(
                QUARANTINE_RATE_CHECK,
                asset=EVENTS_QUARANTINE,
                description=QUARANTINE_RATE_DESCRIPTION,
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
        day = context.partition_key
        selected_checks = context.selected_asset_check_keys
        for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
            kind = KIND_BY_ASSET[key]
            result = total.day_result(kind, day)
            checks = []
            reconcile_check = dg.AssetCheckKey(EVENTS, COUNTS_RECONCILE_CHECK)
            if reconcile_check in selected_checks and key == EVENTS:
                checks.append(
                    dg.AssetCheckResult(
                        asset_key=EVENTS,
                        check_name=COUNTS_RECONCILE_CHECK,
                        passed=result.reconciles and not result.failed_batch_ids,
                        metadata={"rows_declared": result.rows_declared},
                    )
                )
            rate_check = dg.AssetCheckKey(EVENTS_QUARANTINE, QUARANTINE_RATE_CHECK)
            if rate_check in selected_checks and key == EVENTS_QUARANTINE:
                window = RejectionWindow.from_settings(settings)
                window.add(total)
                checks.append(window.result())
            yield dg.MaterializeResult(
                asset_key=key,
                metadata=load_metadata(
                    result,
                    total.day_result(BatchKind.QUARANTINE, day).rows_received,
                    bytes_loaded=total.bytes_by_day[(kind, day)],
                    load_seconds=total.seconds,
                ),
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
