"""Test traffic for the ingest path: client blobs in, decoded SQS batches out."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics_pipeline import aws
from analytics_pipeline.contract import batches
from analytics_pipeline.contract.batches import BatchHeader, BatchKind, Payload
from analytics_pipeline.contract.rows import EventRow, QuarantineRow
from analytics_pipeline.settings import Settings


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
    sent = iso(sent_at or datetime.now(UTC))
    data = json.dumps({"sentAt": sent, "context": {"app": {"name": "t"}}, "batch": events})
    raw = data.encode()
    return gzip.compress(raw) if gzipped else raw


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
    sqs = aws.client("sqs", settings)
    s3 = aws.client("s3", settings)
    queue_url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return received
        for message in messages:
            header = BatchHeader.from_message_attributes(message["MessageAttributes"])
            if header.payload is Payload.S3:
                pointer = batches.s3_pointer_from_body(message["Body"])
                compressed = s3.get_object(Bucket=pointer.bucket, Key=pointer.key)["Body"].read()
            else:
                compressed = batches.body_from_inline(message["Body"])
            ndjson = batches.decompress(compressed)
            received.headers.append(header)
            if header.kind is BatchKind.EVENTS:
                received.events += batches.decode_event_rows(ndjson)
            else:
                received.quarantine += batches.decode_quarantine_rows(ndjson)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


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
