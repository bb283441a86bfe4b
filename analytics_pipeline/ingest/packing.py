"""Turn one invocation's parsed records into day batches ready for SQS (pure: no AWS calls).

Each batch remembers which Kinesis records contributed rows to it, so the handler can report
the lowest of them back to Lambda when the batch cannot be delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

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


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def rfc3339(moment: datetime) -> str:
    """The same text the rows carry on the wire, so header and rows compare as equal strings."""
    return msgspec.json.encode(moment.astimezone(UTC)).decode().strip('"')


def pack_records(
    records: Sequence[ParsedRecord], *, bucket: str, max_message_bytes: int
) -> PackResult:
    """Dedupe messageIds (first in record order wins), group by UTC day, encode each day batch."""
    result = PackResult()
    seen_message_ids: set[str] = set()
    events_by_day: dict[str, list[tuple[EventRow, str]]] = {}
    quarantine_by_day: dict[str, list[tuple[QuarantineRow, str]]] = {}
    for record in records:
        for row in record.accepted:
            if row.message_id in seen_message_ids:
                result.duplicates_dropped += 1
                continue
            seen_message_ids.add(row.message_id)
            events_by_day.setdefault(utc_day(row.timestamp), []).append(
                (row, record.sequence_number)
            )
            result.events_accepted += 1
        for row in record.rejected:
            quarantine_by_day.setdefault(utc_day(row.received_at), []).append(
                (row, record.sequence_number)
            )
            result.rows_rejected += 1

    for day in sorted(events_by_day):
        members = events_by_day[day]
        event_rows = [row for row, _ in members]
        batch_id = batches.batch_id_for(
            BatchKind.EVENTS, day, (row.message_id for row in event_rows)
        )
        timestamps = [row.timestamp for row in event_rows]
        result.batches.append(
            _pack_one(
                BatchKind.EVENTS,
                day,
                batch_id,
                event_rows,
                timestamps,
                [sequence for _, sequence in members],
                bucket,
                max_message_bytes,
            )
        )
    for day in sorted(quarantine_by_day):
        members = quarantine_by_day[day]
        quarantine_rows = [row for row, _ in members]
        batch_id = batches.batch_id_for(
            BatchKind.QUARANTINE, day, (row.quarantine_id for row in quarantine_rows)
        )
        result.batches.append(
            _pack_one(
                BatchKind.QUARANTINE,
                day,
                batch_id,
                quarantine_rows,
                [row.received_at for row in quarantine_rows],
                [sequence for _, sequence in members],
                bucket,
                max_message_bytes,
            )
        )
    return result


def _pack_one(
    kind: BatchKind,
    day: str,
    batch_id: str,
    rows: list[EventRow] | list[QuarantineRow],
    timestamps: list[datetime],
    sequence_numbers: list[str],
    bucket: str,
    max_message_bytes: int,
) -> PackedBatch:
    for row in rows:
        row.batch_id = batch_id
    compressed = compress_batch(batches.encode_rows(rows))
    sources = tuple(dict.fromkeys(sequence_numbers))

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
