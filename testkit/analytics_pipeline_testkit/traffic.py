"""Traffic through the real emulator: client blobs onto the stream, the stream read back, the
batch queue drained and decoded."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.contract import batches
from analytics_pipeline.contract.batches import BatchHeader, BatchKind
from analytics_pipeline.contract.rows import EventRow, QuarantineRow
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.blobs import blob_bytes
from analytics_pipeline_testkit.doubles import decode_blob


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def track_event(message_id: str | None = None, at: datetime | None = None) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Video Recorded",
        "messageId": message_id or uuid.uuid4().hex,
        "anonymousId": "a-1",
        "originalTimestamp": iso(at or datetime.now(UTC)),
        "properties": {"duration_ms": 5400},
    }


def blob(
    events: list[dict[str, Any]], *, gzipped: bool = False, sent_at: datetime | None = None
) -> bytes:
    """A client blob sent now (or at `sent_at`)."""
    return blob_bytes(
        events,
        compress=gzipped,
        sentAt=iso(sent_at or datetime.now(UTC)),
        context={"app": {"name": "t"}},
    )


@dataclass
class Traffic:
    """What was put on the stream and what the pipeline must make of it."""

    valid: list[str] = field(default_factory=list)  # messageIds that must be loaded
    invalid: list[str] = field(default_factory=list)  # messageIds that must be quarantined
    garbage_blobs: int = 0  # blobs that must become one blob-level quarantine row each
    records: int = 0


def put_mixed_traffic(settings: Settings, blobs: int, events_per_blob: int = 5) -> Traffic:
    """Plain and gzip blobs; every third blob carries an invalid event; one garbage blob."""
    kinesis = aws.client("kinesis", settings)
    traffic = Traffic()
    entries: list[dict[str, Any]] = []
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for index in range(blobs):
        events = [track_event(at=yesterday if n % 2 else None) for n in range(events_per_blob)]
        traffic.valid += [e["messageId"] for e in events]
        if index % 3 == 0:
            bad = track_event()
            del bad["event"]  # track without an event name
            events.append(bad)
            traffic.invalid.append(bad["messageId"])
        entries.append({"Data": blob(events, gzipped=index % 2 == 1), "PartitionKey": str(index)})
    entries.append({"Data": b"\x00not json{", "PartitionKey": "garbage"})
    traffic.garbage_blobs = 1
    for start in range(0, len(entries), 500):
        response = kinesis.put_records(
            StreamName=settings.stream_name, Records=entries[start : start + 500]
        )
        assert response["FailedRecordCount"] == 0
    traffic.records = len(entries)
    return traffic


@dataclass
class Received:
    headers: list[BatchHeader] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)


def drain_queue(settings: Settings, received: Received | None = None) -> Received:
    """Receive, decode and delete every visible batch message (inline or S3 pointer)."""
    received = received or Received()
    queue = BatchQueue.for_settings(settings)
    while True:
        messages = queue.receive(max_messages=10, visibility_timeout=30, first_wait_seconds=0)
        if not messages:
            return received
        for message in messages:
            header = message.header
            assert header is not None, message.error
            ndjson = batches.decompress(queue.body(message))
            received.headers.append(header)
            if header.kind is BatchKind.EVENTS:
                received.events += batches.decode_event_rows(ndjson)
            else:
                received.quarantine += batches.decode_quarantine_rows(ndjson)
        queue.delete_messages([message.receipt_handle for message in messages])


def wait_for_message_ids(
    settings: Settings, expected: set[str], timeout: float, received: Received | None = None
) -> Received:
    """Drain the queue until every expected messageId arrived (or the timeout passes)."""
    received = received or Received()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drain_queue(settings, received)
        if expected <= {row.message_id for row in received.events}:
            return received
        time.sleep(0.2)
    return received


@dataclass(frozen=True)
class StoredRecord:
    shard_id: str
    partition_key: str
    data: bytes
    arrived_at: datetime


def read_stream(kinesis: Any, stream_name: str) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    shards = kinesis.list_shards(StreamName=stream_name)["Shards"]
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(
                StoredRecord(
                    shard["ShardId"],
                    record["PartitionKey"],
                    record["Data"],
                    record["ApproximateArrivalTimestamp"],
                )
                for record in page["Records"]
            )
            if not page["Records"] or page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return records


def read_blobs(settings: Settings) -> list[dict[str, Any]]:
    """Every record on the stream, decoded as a client blob (gzip detected by magic bytes)."""
    return [
        decode_blob(record.data)
        for record in read_stream(aws.client("kinesis", settings), settings.stream_name)
    ]


@dataclass(frozen=True)
class OversizeBatch:
    """An oversize batch as the Lambda sends it (an SQS pointer to an S3 body), sent with its
    body missing: a poison batch whose cause an operator can fix (`restore_body`)."""

    batch_id: str
    key: str
    body: bytes
    message_ids: list[str]

    def restore_body(self, settings: Settings) -> None:
        aws.client("s3", settings).put_object(Bucket=settings.bucket, Key=self.key, Body=self.body)


def send_batch_without_body(settings: Settings, events: int = 3) -> OversizeBatch:
    """Send the pointer message of a fresh batch of today's events; its S3 object is absent."""
    from analytics_pipeline.ingest.packing import compress_batch

    now = datetime.now(UTC)
    day = now.date().isoformat()
    rows = [
        EventRow(
            message_id=f"poison-{uuid.uuid4().hex[:12]}",
            type="track",
            event="Video Recorded",
            anonymous_id="a-poison",
            timestamp=now,
            original_timestamp=now,
            sent_at=now,
            received_at=now,
        )
        for _ in range(events)
    ]
    ids = [row.message_id for row in rows]
    batch_id = batches.batch_id_for(BatchKind.EVENTS, day, ids)
    key = batches.s3_key(BatchKind.EVENTS, day, batch_id)
    header = BatchHeader(
        batch_id, BatchKind.EVENTS, day, len(rows), iso(now), iso(now), batches.Payload.S3
    )
    sqs = aws.client("sqs", settings)
    sqs.send_message(
        QueueUrl=sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"],
        MessageBody=batches.s3_pointer_body(settings.bucket, key),
        MessageAttributes=header.to_message_attributes(),
    )
    return OversizeBatch(batch_id, key, compress_batch(batches.encode_rows(rows)), ids)
