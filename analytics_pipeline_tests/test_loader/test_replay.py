"""Poison batches, the dead-letter queue and both replays, against the real emulator over HTTP.

The loader runs in-process (receive, load, delete, as the load loop does) on a real DuckDB
file; SQS's own redrive moves a message to the dead-letter queue. The CLI commands are driven
through click with the same environment. `e2e/test_catalogue_e2e.py` shows a poison
batch under the running `dagster dev`.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from analytics_pipeline import aws
from analytics_pipeline.cli import main
from analytics_pipeline.contract import parse_blob
from analytics_pipeline.contract.batches import BatchHeader, BatchKind, Payload
from analytics_pipeline.ingest.handler import build_handler
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.loader.loop import open_loader
from analytics_pipeline.loader.replay import (
    dead_letters_for,
    replay_dead_letters,
    replay_dead_letters_for,
    replay_payload,
    replay_quarantine_for,
)
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import LoadPlan, LoadResult
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse, WarehouseBusyError
from analytics_pipeline_testkit.processes import wait_for

MAX_RECEIVES = 2


@pytest.fixture
def settings(new_pipeline: Callable[..., Settings]) -> Settings:
    return new_pipeline(
        ANALYTICS_QUEUE_MAX_RECEIVES=str(MAX_RECEIVES), ANALYTICS_MAX_EVENTS_PER_BLOB="10"
    )


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(message_id: str, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    base = {
        "type": "track",
        "event": "Replay Probe",
        "messageId": message_id,
        "anonymousId": "device-replay",
        "originalTimestamp": iso(at or datetime.now(UTC)),
        "properties": {"n": 1},
    }
    return {**base, **fields}


def ingest(settings: Settings, blobs: Sequence[list[dict[str, Any]]]) -> None:
    """Blobs through the real Lambda handler, arriving now (as the trigger would deliver them)."""
    now = datetime.now(UTC)
    records = []
    for number, batch in enumerate(blobs):
        data = gzip.compress(json.dumps({"sentAt": iso(now), "batch": batch}).encode())
        records.append(
            {
                "kinesis": {
                    "sequenceNumber": str(1000 + number),
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": now.timestamp(),
                    "partitionKey": "p",
                },
                "eventID": f"shardId-000000000000:{1000 + number}",
                "eventSourceARN": f"arn:aws:kinesis:us-east-1:1:stream/{settings.stream_name}",
            }
        )
    response = build_handler(settings)({"Records": records}, None)
    assert response["batchItemFailures"] == []


class BrokenWarehouse(DuckDBWarehouse):
    """A warehouse with a bug that refuses some batch ids until it is fixed."""

    def __init__(self, path: Path, broken: set[str]) -> None:
        super().__init__(path)
        self.broken = broken

    def commit(self, plan: LoadPlan, prepared: dict[str, Any]) -> None:
        refused = self.broken & {batch.batch_id for batch in plan.batches}
        if refused:
            raise ValueError(f"warehouse bug: refuses {sorted(refused)}")
        super().commit(plan, prepared)


def run_once(settings: Settings, warehouse: DuckDBWarehouse) -> dict[BatchKind, LoadResult]:
    """What one turn of the load loop does: receive, load, delete."""
    with open_loader(settings, warehouse=warehouse) as loader:
        messages = loader.queue.receive(max_messages=100, visibility_timeout=1)
        return loader.load(messages).results if messages else {}


def run_until_queue_empty(settings: Settings, warehouse: DuckDBWarehouse) -> int:
    """Runs until SQS has nothing left (failed batches come back after 1 s, then dead-letter)."""
    queue = BatchQueue.for_settings(settings)
    runs = 0
    while queue.depth() != {"visible": 0, "in_flight": 0}:
        run_once(settings, warehouse)
        runs += 1
        assert runs < 30, "the queue never emptied: a poison batch is blocking it"
    return runs


def put_corrupt_batch(settings: Settings) -> str:
    """A message with a proper header whose body is base64 of bytes that are not gzip."""
    batch_id = f"corrupt-{uuid.uuid4().hex[:8]}"
    today = datetime.now(UTC).date().isoformat()
    header = BatchHeader(batch_id, BatchKind.EVENTS, today, 1, "", "", Payload.INLINE)
    sqs = aws.client("sqs", settings)
    sqs.send_message(
        QueueUrl=sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"],
        MessageBody=base64.b64encode(b"this is not gzip").decode(),
        MessageAttributes=header.to_message_attributes(),
    )
    return batch_id


def event_ids(warehouse: DuckDBWarehouse) -> list[str]:
    return sorted(row[0] for row in warehouse.query("SELECT message_id FROM analytics.events").rows)


def test_poison_batches_reach_the_dlq_without_blocking_and_replay_loads_them_once(
    settings: Settings,
) -> None:
    good = [f"good-{i}" for i in range(6)]
    ingest(settings, [[event(good[0]), event(good[1])], [event(good[2])]])
    corrupt_id = put_corrupt_batch(settings)
    broken: set[str] = set()
    warehouse = BrokenWarehouse(settings.duckdb_path, broken)
    # The second blob's batch: make the warehouse refuse it (a bug to be fixed later).
    queue = BatchQueue.for_settings(settings)
    waiting = queue.receive(max_messages=100, visibility_timeout=1)
    refused_id = next(
        m.header.batch_id for m in waiting if m.header and m.header.batch_id != corrupt_id
    )
    queue.release(waiting)
    broken.add(refused_id)
    ingest(settings, [[event(good[3]), event(good[4]), event(good[5])]])

    runs = run_until_queue_empty(settings, warehouse)

    # Every batch that could load did, in the first run, beside the failing ones.
    loaded = set(event_ids(warehouse))
    assert loaded and loaded < set(good)
    assert runs >= MAX_RECEIVES
    letters = {letter.batch_id: letter for letter in dead_letters_for(settings)}
    assert set(letters) == {corrupt_id, refused_id}
    assert "gzip" in letters[corrupt_id].failure.error.lower()
    assert "warehouse bug" in letters[refused_id].failure.error
    assert letters[refused_id].failure.receive_count == MAX_RECEIVES
    assert letters[refused_id].header.row_count == len(set(good) - loaded)

    # The CLI shows the same, with the reason.
    listing = CliRunner().invoke(main, ["dlq", "list", "--format", "json"])
    assert listing.exit_code == 0, listing.output
    rows = {row["batch_id"]: row for row in json.loads(listing.output)}
    assert set(rows) == {corrupt_id, refused_id}
    assert "warehouse bug" in rows[refused_id]["why"]
    assert rows[refused_id]["receives"] == MAX_RECEIVES
    table = CliRunner().invoke(main, ["dlq", "list"])
    assert refused_id in table.output and "load: ValueError: warehouse bug" in table.output

    # Fix the cause, replay only that batch; a crash between send and delete resends it.
    broken.clear()
    dead_letters = BatchQueue.for_settings(settings, dead_letters=True)
    sqs = dead_letters.sqs

    class CrashBeforeDelete:
        def __getattr__(self, name: str) -> Any:
            return getattr(sqs, name)

        def delete_message_batch(self, **_: Any) -> None:
            raise ConnectionError("killed between send and delete")

    dead_letters.sqs = CrashBeforeDelete()
    with pytest.raises(ConnectionError):
        replay_dead_letters(
            dead_letters, BatchQueue.for_settings(settings), [refused_id], visibility_seconds=1
        )
    report = wait_for(
        lambda: (r := replay_dead_letters_for(settings, [refused_id])).sent and r,
        timeout=30,
        interval=0.5,
        what="the crashed replay's message visible again in the dead-letter queue",
    )
    assert report.sent == [refused_id] and report.left == 1
    run_until_queue_empty(settings, warehouse)

    assert event_ids(warehouse) == sorted(good)  # each once, despite two copies sent
    assert [letter.batch_id for letter in dead_letters_for(settings)] == [corrupt_id]
    again = CliRunner().invoke(main, ["dlq", "replay", "--batch-id", refused_id])
    assert again.exit_code == 0 and "sent back to the queue: 0" in again.output


def test_quarantine_replay_after_a_contract_fix_loads_each_event_once(
    settings: Settings, pipeline_env: Callable[[Mapping[str, str]], None]
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    bad_type = event("bad-type", type="purchase")
    ingest(
        settings,
        [
            [
                event("fresh"),
                event("old-1", timestamp=iso(old)),
                event("old-2", timestamp=iso(old)),
            ],
            [event(f"many-{i}") for i in range(12)],  # over ANALYTICS_MAX_EVENTS_PER_BLOB=10
            [bad_type],
            [event("other"), bad_type],  # a client resend, beside another event: still one row
        ],
    )
    warehouse = DuckDBWarehouse(settings.duckdb_path)
    run_until_queue_empty(settings, warehouse)
    assert event_ids(warehouse) == ["fresh", "other"]
    reasons = warehouse.query("SELECT reason, count(*) FROM analytics.events_quarantine GROUP BY 1")
    assert dict(reasons.rows) == {
        "timestamp_too_old": 2,
        "blob_too_many_events": 1,
        "invalid_type": 1,
    }

    # Before the fix, a replay accepts nothing and marks nothing.
    unchanged = replay_quarantine_for(settings, "timestamp_too_old")
    assert (unchanged.rows, unchanged.replayed) == (2, 0)
    assert dict(unchanged.still_rejected) == {"timestamp_too_old": 2}

    # The contract fix: a wider late-arrival window and a higher events-per-blob limit.
    fixed_env = {**settings.to_env(), "ANALYTICS_LATE_ARRIVAL_DAYS": "60"}
    fixed_env["ANALYTICS_MAX_EVENTS_PER_BLOB"] = "2500"
    pipeline_env(fixed_env)
    runner = CliRunner()
    for reason, expected in (("timestamp_too_old", 2), ("blob_too_many_events", 1)):
        result = runner.invoke(main, ["quarantine", "replay", "--reason", reason])
        assert result.exit_code == 0, result.output
        assert f"replayed: {expected}" in result.output
    for reason in ("timestamp_too_old", "blob_too_many_events"):  # a second replay: nothing
        result = runner.invoke(main, ["quarantine", "replay", "--reason", reason])
        assert "rows: 0; replayed: 0" in result.output
    run_until_queue_empty(settings, warehouse)

    expected_ids = ["fresh", "old-1", "old-2", "other"] + [f"many-{i}" for i in range(12)]
    assert event_ids(warehouse) == sorted(expected_ids)
    old_rows = warehouse.query(
        "SELECT timestamp FROM analytics.events WHERE message_id LIKE 'old-%'"
    ).rows
    assert {row[0] for row in old_rows} == {
        old.replace(tzinfo=None, microsecond=old.microsecond // 1000 * 1000)
    }
    marked = warehouse.query(
        "SELECT reason, count(*) FILTER (replayed_at IS NOT NULL), count(*) "
        "FROM analytics.events_quarantine GROUP BY 1"
    )
    assert {r: (m, n) for r, m, n in marked.rows} == {
        "timestamp_too_old": (2, 2),
        "blob_too_many_events": (1, 1),
        "invalid_type": (0, 1),
    }
    bad = runner.invoke(main, ["quarantine", "replay", "--reason", "no_such_reason"])
    assert bad.exit_code != 0 and "unknown reason code" in bad.output


def test_replay_takes_a_blob_rows_payload_whole_and_wraps_an_event_rows_payload() -> None:
    """Blob rows are told by their reason, whatever their id: old position-based ids too."""
    now = datetime.now(UTC)
    (blob_row,) = parse_blob(b'{"batch": 5}', received_at=now, source="s").rejected
    data = json.dumps({"batch": [event("e-1", type="purchase")]}).encode()
    (event_row,) = parse_blob(data, received_at=now, source="s").rejected
    legacy_blob_row = msgspec.structs.replace(blob_row, quarantine_id="0" * 32)

    assert replay_payload(blob_row) == b'{"batch": 5}'
    assert replay_payload(legacy_blob_row) == b'{"batch": 5}'
    assert replay_payload(event_row) == b'{"batch":[' + event_row.payload.encode() + b"]}"


class LockedWarehouse(DuckDBWarehouse):
    def commit(self, plan: LoadPlan, prepared: dict[str, Any]) -> None:
        raise WarehouseBusyError("another process holds the file")


def test_a_transient_error_fails_the_whole_load_and_isolates_nothing(settings: Settings) -> None:
    ingest(settings, [[event("t-1")], [event("t-2")]])
    warehouse = LockedWarehouse(settings.duckdb_path)
    with open_loader(settings, warehouse=warehouse) as loader:
        messages = loader.queue.receive(max_messages=100, visibility_timeout=30)
        assert messages
        with pytest.raises(WarehouseBusyError):
            loader.load(messages)
        pending = loader.store.pending()

    queue = BatchQueue.for_settings(settings)
    assert queue.depth()["in_flight"] == len(messages)  # nothing deleted: the loop retries all
    assert len(pending) == 1  # the intent waits for the next load to recover it
    listed = aws.client("s3", settings).list_objects_v2(
        Bucket=settings.bucket, Prefix="load-failures/"
    )
    assert listed.get("KeyCount", 0) == 0  # and no batch is blamed for it
