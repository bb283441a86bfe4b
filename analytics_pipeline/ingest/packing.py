"""Turn one invocation's parsed records into day batches ready for SQS (pure: no AWS calls).

Each batch remembers which Kinesis records contributed rows to it, so the handler can report
the lowest of them back to Lambda when the batch cannot be delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from analytics_pipeline.contract import batches
from analytics_pipeline.contract.batches import BatchHeader, BatchKind, Payload
from analytics_pipeline.contract.rows import EventRow, QuarantineRow

try:  # ISA-L's deflate: the same gzip format, ~5x faster than zlib level 1 and smaller
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - a Lambda package built without isal still works
    import zlib as _deflate

# gzip was the largest single cost of the handler's one core (zlib level 6: ~5.6 us/event, more
# than parsing). Level 1 of ISA-L takes ~0.6 us/event for ~10 % more bytes than zlib level 6;
# zlib level 1 (the fallback) ~2.7 us/event for ~20 % more. See benchmarks/speed_work.md.
HANDLER_GZIP_LEVEL = 1
GZIP_WBITS = 31  # gzip container; the header's mtime is 0, so equal content gives equal bytes


def compress_batch(ndjson: bytes) -> bytes:
    return _deflate.compress(ndjson, HANDLER_GZIP_LEVEL, wbits=GZIP_WBITS)


@dataclass(frozen=True)
class ParsedRecord:
    """The contract's verdict on one Kinesis record, in record order."""

    sequence_number: str
    accepted: Sequence[EventRow]
    rejected: Sequence[QuarantineRow]


@dataclass(frozen=True)
class PackedBatch:
    header: BatchHeader
    compressed: bytes  # gzip NDJSON: what the loader reads, inline or from S3
    body: str  # the SQS message body: base64 of `compressed`, or an S3 pointer
    s3_key: str | None  # where `compressed` must be put before the pointer is sent
    source_sequence_numbers: tuple[str, ...]  # Kinesis records that contributed rows

    @property
    def message_attributes(self) -> dict[str, dict[str, str]]:
        return self.header.to_message_attributes()

    @property
    def message_bytes(self) -> int:
        return sqs_message_bytes(self.body, self.message_attributes)


@dataclass
class PackResult:
    batches: list[PackedBatch] = field(default_factory=list)
    events_accepted: int = 0
    rows_rejected: int = 0
    duplicates_dropped: int = 0


def sqs_message_bytes(body: str, attributes: dict[str, dict[str, str]]) -> int:
    """Size as SQS counts it against its limit: body plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode())
    return size


_day_text: dict[date, str] = {}


def utc_day(moment: datetime) -> str:
    """YYYY-MM-DD of the UTC day; rows are already UTC, so this is a lookup on the hot path."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    day = moment.date()
    text = _day_text.get(day)
    if text is None:
        text = _day_text[day] = day.isoformat()
    return text


def rfc3339(moment: datetime) -> str:
    """The same text the rows carry on the wire, so header and rows compare as equal strings."""
    return msgspec.json.encode(moment.astimezone(UTC)).decode().strip('"')


@dataclass
class _DayGroup:
    """Rows of one day and, in record order, the Kinesis records they came from."""

    rows: list[Any] = field(default_factory=list)
    sources: dict[str, None] = field(default_factory=dict)


def pack_records(
    records: Sequence[ParsedRecord], *, bucket: str, max_message_bytes: int
) -> PackResult:
    """Dedupe messageIds (first in record order wins), group by UTC day, encode each day batch."""
    result = PackResult()
    seen_message_ids: set[str] = set()
    events_by_day: dict[str, _DayGroup] = {}
    quarantine_by_day: dict[str, _DayGroup] = {}
    for record in records:
        sequence_number = record.sequence_number
        # Consecutive rows of a record nearly always share a day: look the group up on a change.
        last_date: date | None = None
        rows: list[Any] = []
        for row in record.accepted:
            message_id = row.message_id
            if message_id in seen_message_ids:
                result.duplicates_dropped += 1
                continue
            seen_message_ids.add(message_id)
            moment = row.timestamp
            if moment.tzinfo is not UTC:
                moment = moment.astimezone(UTC)
            moment_date = moment.date()
            if moment_date != last_date:
                last_date = moment_date
                group = events_by_day.setdefault(utc_day(moment), _DayGroup())
                group.sources[sequence_number] = None
                rows = group.rows
            rows.append(row)
        for row in record.rejected:
            group = quarantine_by_day.setdefault(utc_day(row.received_at), _DayGroup())
            group.rows.append(row)
            group.sources[sequence_number] = None
            result.rows_rejected += 1
    result.events_accepted = sum(len(group.rows) for group in events_by_day.values())

    for kind, groups in (
        (BatchKind.EVENTS, events_by_day),
        (BatchKind.QUARANTINE, quarantine_by_day),
    ):
        for day in sorted(groups):
            result.batches.append(_pack_one(kind, day, groups[day], bucket, max_message_bytes))
    return result


def _pack_one(
    kind: BatchKind, day: str, group: _DayGroup, bucket: str, max_message_bytes: int
) -> PackedBatch:
    """One day's batch: its id is derived from its rows' ids, so a retry packs the same id."""
    rows: list[EventRow] | list[QuarantineRow] = group.rows
    if kind is BatchKind.EVENTS:
        ids = [row.message_id for row in rows]
        timestamps = [row.timestamp for row in rows]
    else:
        ids = [row.quarantine_id for row in rows]
        timestamps = [row.received_at for row in rows]
    batch_id = batches.batch_id_for(kind, day, ids)
    for row in rows:
        row.batch_id = batch_id
    compressed = compress_batch(batches.encode_rows(rows))
    sources = tuple(group.sources)

    def header(payload: Payload) -> BatchHeader:
        return BatchHeader(
            batch_id=batch_id,
            kind=kind,
            day=day,
            row_count=len(rows),
            min_timestamp=rfc3339(min(timestamps)),
            max_timestamp=rfc3339(max(timestamps)),
            payload=payload,
        )

    inline_header = header(Payload.INLINE)
    body = batches.inline_body(compressed)
    if sqs_message_bytes(body, inline_header.to_message_attributes()) <= max_message_bytes:
        return PackedBatch(inline_header, compressed, body, None, sources)
    key = batches.s3_key(kind, day, batch_id)
    return PackedBatch(
        header(Payload.S3), compressed, batches.s3_pointer_body(bucket, key), key, sources
    )
