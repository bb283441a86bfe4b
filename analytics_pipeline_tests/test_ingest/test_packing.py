"""Packing one invocation's rows into day batches: grouping, dedupe, inline or S3, stable ids."""

from __future__ import annotations

from datetime import UTC, datetime

from analytics_pipeline.contract import batches
from analytics_pipeline.contract.batches import BatchHeader, BatchKind, Payload
from analytics_pipeline.contract.rows import EventRow, QuarantineRow
from analytics_pipeline.ingest.packing import ParsedRecord, pack_records, sqs_message_bytes

DAY_1 = datetime(2026, 11, 28, 23, 59, 59, 500000, tzinfo=UTC)
DAY_2 = datetime(2026, 11, 29, 0, 0, 1, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def event(message_id: str, timestamp: datetime = DAY_2, name: str = "Played") -> EventRow:
    return EventRow(
        message_id=message_id,
        type="track",
        event=name,
        anonymous_id="a-1",
        timestamp=timestamp,
        received_at=RECEIVED,
    )


def rejected(quarantine_id: str, received_at: datetime = RECEIVED) -> QuarantineRow:
    return QuarantineRow(
        quarantine_id=quarantine_id,
        reason="missing_event_name",
        detail="track without event",
        payload="{}",
        received_at=received_at,
        source="kinesis:s:shardId-000000000000:1",
    )


def sample_records() -> list[ParsedRecord]:
    return [
        ParsedRecord("7", [event("m1", DAY_1), event("m2", DAY_2)], [rejected("q1")]),
        ParsedRecord("12", [event("m3", DAY_2)], []),
        ParsedRecord("30", [event("m4", DAY_1)], [rejected("q2", DAY_1)]),
    ]


def pack(records: list[ParsedRecord], max_message_bytes: int = 1_048_576):
    return pack_records(records, bucket="bucket", max_message_bytes=max_message_bytes)


def test_rows_are_grouped_by_utc_day_with_their_source_records() -> None:
    result = pack(sample_records())

    by_key = {(b.header.kind, b.header.day): b for b in result.batches}
    assert set(by_key) == {
        (BatchKind.EVENTS, "2026-11-28"),
        (BatchKind.EVENTS, "2026-11-29"),
        (BatchKind.QUARANTINE, "2026-11-28"),
        (BatchKind.QUARANTINE, "2026-11-29"),
    }
    day_1 = by_key[(BatchKind.EVENTS, "2026-11-28")]
    rows = batches.decode_event_rows(batches.decompress(day_1.compressed))
    assert [r.message_id for r in rows] == ["m1", "m4"]
    assert {r.batch_id for r in rows} == {day_1.header.batch_id}
    assert day_1.source_sequence_numbers == ("7", "30")
    assert day_1.header.row_count == 2
    assert day_1.header.min_timestamp == "2026-11-28T23:59:59.500000Z"
    assert by_key[(BatchKind.EVENTS, "2026-11-29")].source_sequence_numbers == ("7", "12")
    quarantine = by_key[(BatchKind.QUARANTINE, "2026-11-29")]
    quarantine_rows = batches.decode_quarantine_rows(batches.decompress(quarantine.compressed))
    assert [r.quarantine_id for r in quarantine_rows] == ["q1"]
    assert quarantine_rows[0].batch_id == quarantine.header.batch_id
    assert (result.events_accepted, result.rows_rejected) == (4, 2)


def test_batch_ids_and_bytes_are_the_same_for_the_same_input() -> None:
    first = pack(sample_records())
    second = pack(sample_records())

    assert [b.header for b in first.batches] == [b.header for b in second.batches]
    assert [b.compressed for b in first.batches] == [b.compressed for b in second.batches]
    events_day_2 = next(b for b in first.batches if b.header.day == "2026-11-29")
    assert events_day_2.header.batch_id == batches.batch_id_for(
        BatchKind.EVENTS, "2026-11-29", ["m2", "m3"]
    )


def test_duplicate_message_ids_keep_the_first_in_record_order() -> None:
    records = [
        ParsedRecord("1", [event("m1", name="first"), event("m1", name="same blob")], []),
        ParsedRecord("2", [event("m1", name="later blob"), event("m2")], []),
    ]

    result = pack(records)

    (only,) = result.batches
    rows = batches.decode_event_rows(batches.decompress(only.compressed))
    assert [(r.message_id, r.event) for r in rows] == [("m1", "first"), ("m2", "Played")]
    assert result.duplicates_dropped == 2
    assert result.events_accepted == 2


def test_a_record_whose_rows_were_all_duplicates_is_not_a_source() -> None:
    result = pack([ParsedRecord("1", [event("m1")], []), ParsedRecord("2", [event("m1")], [])])

    assert [b.source_sequence_numbers for b in result.batches] == [("1",)]


def test_attributes_round_trip_and_describe_the_batch() -> None:
    (batch,) = pack([ParsedRecord("1", [event("m1", DAY_1), event("m2", DAY_1)], [])]).batches

    attributes = batch.message_attributes
    assert BatchHeader.from_message_attributes(attributes) == batch.header
    assert attributes["row_count"] == {"DataType": "Number", "StringValue": "2"}
    assert attributes["format"]["StringValue"] == batches.FORMAT
    assert attributes["payload"]["StringValue"] == "inline"
    assert batches.body_from_inline(batch.body) == batch.compressed


def test_batch_goes_to_s3_exactly_when_the_inline_message_would_not_fit() -> None:
    records = [ParsedRecord("1", [event(f"m{i}") for i in range(50)], [])]
    (inline,) = pack(records).batches
    inline_size = sqs_message_bytes(inline.body, inline.message_attributes)

    (fits,) = pack(records, max_message_bytes=inline_size).batches
    (too_big,) = pack(records, max_message_bytes=inline_size - 1).batches

    assert fits.header.payload is Payload.INLINE and fits.s3_key is None
    assert too_big.header.payload is Payload.S3
    assert too_big.s3_key == batches.s3_key(BatchKind.EVENTS, "2026-11-29", fits.header.batch_id)
    pointer = batches.s3_pointer_from_body(too_big.body)
    assert (pointer.bucket, pointer.key) == ("bucket", too_big.s3_key)
    assert too_big.compressed == fits.compressed
    assert too_big.header.batch_id == fits.header.batch_id


def test_message_size_counts_attributes_like_sqs() -> None:
    attributes = {"day": {"DataType": "String", "StringValue": "2026-11-29"}}

    assert sqs_message_bytes("abc", attributes) == 3 + len("day") + len("String") + 10
