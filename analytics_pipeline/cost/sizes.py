"""Bytes per event on each billed hop, measured by running the pipeline's own code on a sample.

The sample is built here (the product must not import the test kit or the benchmarks) in the
shape of the benchmark workload: mostly track events with nested properties, some screens and
identifies, a blob context, sometimes an event-level context. It goes through the client's wire
encoder (gzip blobs), the contract's parser and the Lambda's packer, exactly as in production,
so a change to any of them changes the cost figures. Measuring takes a few milliseconds.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from analytics_pipeline.client.encoding import encode_blob, encode_json, format_timestamp
from analytics_pipeline.contract import batches
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.parse import parse_blob
from analytics_pipeline.contract.rows import QuarantineRow
from analytics_pipeline.ingest.packing import ParsedRecord, pack_records
from analytics_pipeline.loader.plan import plan_load
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.tables import (
    ACTIVE_USERS_DELTAS_COLUMNS,
    EVENT_COUNT_DELTAS_COLUMNS,
    EVENT_TABLE_COLUMNS,
    LOADED_BATCHES_COLUMNS,
    QUARANTINE_TABLE_COLUMNS,
    Column,
)

SAMPLE_EVENTS = 400
_RECEIVED_AT = datetime(2026, 11, 29, 12, 0, 6, tzinfo=UTC)
_TRACK_NAMES = ("Video Recorded", "Video Shared", "Feed Scrolled", "Purchase Completed")
_SCREEN_NAMES = ("Feed", "Camera", "Profile", "Settings")
_FIXED_BYTES = {"TIMESTAMP": 8, "BIGINT": 8, "DATE": 8}
# The duplicate check reads these columns of each scanned row (`message_id ... WHERE timestamp`).
DUPLICATE_CHECK_COLUMNS = ("message_id", "timestamp")


@dataclass(frozen=True)
class MeasuredSizes:
    """Averages over the sample; bytes are per event unless the name says otherwise."""

    events_per_blob: int
    blob_bytes: float  # one gzip blob of `events_per_blob` events: the Kinesis record
    blob_bytes_per_event: float
    events_row_bytes: float  # BigQuery logical size of an `events` row (storage)
    write_api_row_bytes: float  # the same row as the Write API appends it
    quarantine_row_bytes: float  # one rejected event's `events_quarantine` row
    sqs_body_bytes_per_event: float  # base64 of gzip NDJSON, as the Lambda sends it inline
    sqs_body_bytes_per_rejected_row: float
    sqs_attribute_bytes_per_message: float
    s3_pointer_body_bytes: float  # the body of an oversize batch's message: where it lies in S3
    duplicate_check_bytes_per_row: float  # message_id + timestamp as BigQuery bills a scan
    event_counts_delta_row_bytes: float  # a daily_event_counts_deltas row (day, type, event)
    active_users_delta_row_bytes: float  # a daily_active_users_deltas row (day)
    store_keys_per_event: float  # messageId + first-seen (day, user...) keys the store keeps
    ledger_row_bytes: float  # one `loaded_batches` row: a batch the load committed

    def as_json(self) -> dict[str, float]:
        return {name: round(value, 1) for name, value in asdict(self).items()}


def measure(
    events_per_blob: int, limits: Limits, sqs_message_max_bytes: int, bucket: str
) -> MeasuredSizes:
    rng = random.Random(13)
    blob_count = max(1, math.ceil(SAMPLE_EVENTS / events_per_blob))
    blobs = [_blob(rng, events_per_blob) for _ in range(blob_count)]
    records = []
    for index, blob in enumerate(blobs):
        parsed = parse_blob(blob, received_at=_RECEIVED_AT, source="cost-sample", limits=limits)
        if parsed.rejected:  # a blob of this many sample events breaks a limit
            raise ValueError(
                f"a sample blob of {events_per_blob} events: {parsed.rejected[0].detail}"
            )
        records.append(ParsedRecord(str(index), parsed.accepted, []))
    events = blob_count * events_per_blob
    packed = pack_records(records, bucket=bucket, max_message_bytes=sqs_message_max_bytes)
    (batch,) = packed.batches  # one day, one kind
    # The loader's own plan of a load of these batches into empty tables and an empty store.
    header = batch.header
    staged = [
        StagedBatch(header.batch_id, header.kind, header.day, header.row_count, batch.compressed)
    ]
    plan = plan_load(staged, known=lambda keys: set(), loaded_batches=lambda ids: set())
    rejected = _rejected_row(rng, limits)
    rejected_batch = pack_records(
        [ParsedRecord("r", [], [rejected])], bucket=bucket, max_message_bytes=1 << 30
    ).batches[0]
    events_row = _mean(logical_bytes(row, EVENT_TABLE_COLUMNS) for row in plan.events)
    inline_body = batches.inline_body(batch.compressed)  # even if this one went to S3
    attributes = batch.message_bytes - len(batch.body)
    pointer = batches.s3_pointer_body(
        bucket, batches.s3_key(header.kind, header.day, header.batch_id)
    )
    check_columns = [c for c in EVENT_TABLE_COLUMNS if c.name in DUPLICATE_CHECK_COLUMNS]
    return MeasuredSizes(
        events_per_blob=events_per_blob,
        blob_bytes=sum(map(len, blobs)) / blob_count,
        blob_bytes_per_event=sum(map(len, blobs)) / events,
        events_row_bytes=events_row,
        write_api_row_bytes=events_row,  # appended straight into `events`: the same row
        quarantine_row_bytes=logical_bytes(rejected, QUARANTINE_TABLE_COLUMNS),
        sqs_body_bytes_per_event=len(inline_body) / events,
        sqs_body_bytes_per_rejected_row=len(batches.inline_body(rejected_batch.compressed)),
        sqs_attribute_bytes_per_message=attributes,
        s3_pointer_body_bytes=len(pointer),
        duplicate_check_bytes_per_row=_mean(logical_bytes(r, check_columns) for r in plan.events),
        event_counts_delta_row_bytes=_mean(
            logical_bytes(d, EVENT_COUNT_DELTAS_COLUMNS, load_id=plan.load_id)
            for d in plan.event_counts
        ),
        active_users_delta_row_bytes=_mean(
            logical_bytes(d, ACTIVE_USERS_DELTAS_COLUMNS, load_id=plan.load_id)
            for d in plan.active_users
        ),
        store_keys_per_event=len(plan.new_keys) / events,
        ledger_row_bytes=logical_bytes(
            plan.batches[0], LOADED_BATCHES_COLUMNS, kind=header.kind, load_id=plan.load_id
        ),
    )


def logical_bytes(row: object, columns: Sequence[Column], **values: object) -> int:
    """BigQuery's logical size of a row: STRING 2 + UTF-8 bytes, TIMESTAMP/INT64/DATE 8, JSON
    its text, NULL 0. A NOT NULL column the row does not carry (`loaded_at`) is set on load;
    `values` are the columns the writer adds (a delta row's `load_id`)."""
    total = 0
    for column in columns:
        value = values.get(column.name, getattr(row, column.name, None))
        if value is None:
            total += _FIXED_BYTES[column.sql_type] if column.not_null else 0
        else:
            total += _value_bytes(value, column.sql_type)
    return total


def _value_bytes(value: object, sql_type: str) -> int:
    if sql_type in _FIXED_BYTES:
        return _FIXED_BYTES[sql_type]
    if isinstance(value, msgspec.Raw):
        return 0 if bytes(value) == b"null" else len(value)
    return 2 + len(str(value).encode())


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items)


def _blob(rng: random.Random, size: int) -> bytes:
    context = {
        "app": {"name": "demo", "version": "4.2.0", "build": "420"},
        "os": {"name": rng.choice(("iOS", "Android")), "version": "18.1"},
        "device": {"id": str(uuid.UUID(int=rng.getrandbits(128))), "model": "iPhone16,2"},
        "library": {"name": "analytics-pipeline-python", "version": "0.1.0"},
    }
    anonymous_id = str(uuid.UUID(int=rng.getrandbits(128)))
    user_id = f"user-{rng.randrange(10**6)}" if rng.random() < 0.6 else None
    events = [encode_json(_event(rng, anonymous_id, user_id)) for _ in range(size)]
    sent_at = format_timestamp(_RECEIVED_AT)
    return encode_blob(sent_at, encode_json(context), events, compress=True)


def _event(rng: random.Random, anonymous_id: str, user_id: str | None) -> dict[str, object]:
    kind = rng.choices(("track", "screen", "identify"), weights=(80, 15, 5))[0]
    moment = _RECEIVED_AT - timedelta(seconds=rng.uniform(1, 3600))
    event: dict[str, object] = {
        "type": kind,
        "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        "anonymousId": anonymous_id,
        "originalTimestamp": format_timestamp(moment),
    }
    if user_id:
        event["userId"] = user_id
    if kind == "track":
        event["event"] = rng.choice(_TRACK_NAMES)
        event["properties"] = {
            "duration_ms": rng.randrange(100, 60_000),
            "quality": rng.choice(("sd", "hd", "4k")),
            "filters": [rng.choice(("mono", "warm", "cool")) for _ in range(3)],
            "location": {"lat": rng.uniform(-90, 90), "lon": rng.uniform(-180, 180)},
            "experiment": {"id": "exp-42", "variant": rng.choice("ABC"), "flags": {"x": True}},
            "caption": "a short caption with some text " * 2,
        }
    elif kind == "screen":
        event["name"] = rng.choice(_SCREEN_NAMES)
        event["properties"] = {"referrer": "push", "tab": {"index": 2, "label": "Following"}}
    else:
        event["traits"] = {"plan": "pro", "email": "someone@example.com", "age": 31}
    if rng.random() < 0.1:
        event["context"] = {"locale": "en-US", "network": {"wifi": True}, "ip": "203.0.113.9"}
    return event


def _rejected_row(rng: random.Random, limits: Limits) -> QuarantineRow:
    """A track event without its event name: the most common rejection, one row."""
    event = _event(rng, str(uuid.UUID(int=rng.getrandbits(128))), None)
    event["type"] = "track"
    event.pop("event", None)
    blob = encode_blob(format_timestamp(_RECEIVED_AT), b"{}", [encode_json(event)], compress=True)
    (row,) = parse_blob(
        blob, received_at=_RECEIVED_AT, source="cost-sample", limits=limits
    ).rejected
    return row
