"""Loading SQS batches into DuckDB exactly once, against the real emulator over HTTP."""

from datetime import UTC, datetime, timedelta

from analytics_pipeline import aws
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader import BatchQueue, drain_day, load_refs
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.traffic import Traffic, put_mixed_traffic


def _fill_queue(settings: Settings) -> Traffic:
    traffic = put_mixed_traffic(settings, blobs=9)
    KinesisTrigger(settings).run_until_idle(timeout=60)
    return traffic


def _counts(warehouse: DuckDBWarehouse) -> tuple[int, int]:
    counts = warehouse.table_row_counts()
    return counts["events"], counts["events_quarantine"]


def test_a_crash_between_commit_and_delete_loads_nothing_twice(pipeline_settings: Settings) -> None:
    traffic = _fill_queue(pipeline_settings)
    queue = BatchQueue.for_settings(pipeline_settings)
    warehouse = DuckDBWarehouse(pipeline_settings.duckdb_path)
    warehouse.ensure_schema()

    first = [queue.stage(m) for m in queue.receive(max_messages=100, visibility_timeout=60)]
    assert first
    # The run commits, then dies before deleting: emulate by loading without the delete.
    for kind in BatchKind:
        kind_refs = [ref for ref in first if ref.kind == kind.value]
        warehouse.load_batches(
            [
                StagedBatch(ref.batch_id, kind, ref.day, ref.row_count, queue.fetch(ref))
                for ref in kind_refs
            ],
            dedupe_window_days=7,
        )
    expected = (len(set(traffic.valid)), len(traffic.invalid) + traffic.garbage_blobs)
    assert _counts(warehouse) == expected

    # The messages come back (visibility expired) and a later run loads them again.
    queue.release(first)
    again = [queue.stage(m) for m in queue.receive(max_messages=100, visibility_timeout=60)]
    assert {ref.sqs_message_id for ref in again} == {ref.sqs_message_id for ref in first}
    assert all(ref.receive_count == 2 for ref in again)
    results = load_refs(queue, warehouse, again, dedupe_window_days=7)

    assert _counts(warehouse) == expected
    assert all(result.rows_inserted == 0 for result in results.values())
    assert sum(r.batches_already_loaded for r in results.values()) == len(
        {ref.batch_id for ref in again}
    )
    assert queue.depth() == {"visible": 0, "in_flight": 0}
    # The staged bodies are gone once loaded.
    listed = aws.client("s3", pipeline_settings).list_objects_v2(Bucket=pipeline_settings.bucket)
    assert listed.get("KeyCount", 0) == 0


def test_load_refs_loads_every_valid_event_once_and_empties_the_queue(
    pipeline_settings: Settings,
) -> None:
    traffic = _fill_queue(pipeline_settings)
    queue = BatchQueue.for_settings(pipeline_settings)
    warehouse = DuckDBWarehouse(pipeline_settings.duckdb_path)
    warehouse.ensure_schema()
    refs = [queue.stage(m) for m in queue.receive(max_messages=100, visibility_timeout=60)]

    results = load_refs(queue, warehouse, refs, dedupe_window_days=7)

    loaded = warehouse.query("SELECT message_id FROM analytics.events")
    assert sorted(row[0] for row in loaded.rows) == sorted(set(traffic.valid))
    assert results[BatchKind.EVENTS].reconciles
    assert results[BatchKind.QUARANTINE].rows_inserted == len(traffic.invalid) + 1
    assert queue.depth() == {"visible": 0, "in_flight": 0}


def test_drain_day_takes_its_day_and_releases_the_rest(pipeline_settings: Settings) -> None:
    _fill_queue(pipeline_settings)
    queue = BatchQueue.for_settings(pipeline_settings)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()

    mine = drain_day(queue, yesterday, {BatchKind.EVENTS}, max_messages=100, visibility_timeout=60)

    assert mine and {(ref.day, ref.kind) for ref in mine} == {(yesterday, "events")}
    others = queue.receive(max_messages=100, visibility_timeout=60)
    assert others, "the other days' batches were released at once"
    assert all(
        message.header is not None
        and (message.header.day, message.header.kind) != (yesterday, BatchKind.EVENTS)
        for message in others
    )
