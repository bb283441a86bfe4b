"""Every `Reason` code is produced by the input it names, and by nothing broader."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from analytics_pipeline.contract import (
    DEFAULT_LIMITS,
    Limits,
    Reason,
    blob_quarantine_id,
    event_quarantine_id,
    is_blob_rejection,
)
from analytics_pipeline_testkit.blobs import (
    RECEIVED_AT,
    REMOVE,
    SOURCE,
    batch_spans,
    blob_bytes,
    nested,
    parse,
    track,
)


def iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class BlobCase:
    reason: Reason
    data: Callable[[], bytes]
    limits: Limits = DEFAULT_LIMITS


BLOB_CASES: dict[str, BlobCase] = {
    "too_large": BlobCase(
        Reason.BLOB_TOO_LARGE,
        lambda: blob_bytes([track(properties={"pad": "x" * 500})]),
        Limits(max_blob_bytes=400),
    ),
    "too_large_gzip_counts_compressed_size": BlobCase(
        Reason.BLOB_TOO_LARGE,
        lambda: blob_bytes([track(properties={"pad": "x" * 5000})], compress=True),
        Limits(max_blob_bytes=100),
    ),
    "decompressed_too_large": BlobCase(
        Reason.BLOB_DECOMPRESSED_TOO_LARGE,
        lambda: blob_bytes([track(properties={"pad": "x" * 5000})], compress=True),
        Limits(max_decompressed_bytes=2000),
    ),
    "gzip_truncated": BlobCase(
        Reason.BLOB_GZIP_INVALID, lambda: blob_bytes([track()], compress=True)[:-12]
    ),
    "gzip_corrupt": BlobCase(
        Reason.BLOB_GZIP_INVALID,
        lambda: (lambda b: b[:12] + bytes(x ^ 0x5A for x in b[12:]))(
            blob_bytes([track()], compress=True)
        ),
    ),
    "gzip_trailing_garbage": BlobCase(
        Reason.BLOB_GZIP_INVALID, lambda: blob_bytes([track()], compress=True) + b"garbage"
    ),
    "gzip_magic_only": BlobCase(Reason.BLOB_GZIP_INVALID, lambda: b"\x1f\x8b"),
    "invalid_utf8": BlobCase(
        Reason.BLOB_INVALID_UTF8,
        lambda: blob_bytes([track(event="PLACEHOLDER")]).replace(b"PLACEHOLDER", b"bad\xff\xfe"),
    ),
    "invalid_utf8_gzip": BlobCase(
        Reason.BLOB_INVALID_UTF8,
        lambda: gzip.compress(
            blob_bytes([track(event="PLACEHOLDER")]).replace(b"PLACEHOLDER", b"\xc3\x28")
        ),
    ),
    "not_json": BlobCase(Reason.BLOB_NOT_JSON, lambda: b"this is not json"),
    "empty": BlobCase(Reason.BLOB_NOT_JSON, lambda: b""),
    "nan_literal": BlobCase(
        Reason.BLOB_NOT_JSON,
        lambda: blob_bytes([track(properties={"x": 0})]).replace(b'"x":0', b'"x":NaN'),
    ),
    "infinity_literal": BlobCase(
        Reason.BLOB_NOT_JSON,
        lambda: blob_bytes([track(properties={"x": 0})]).replace(b'"x":0', b'"x":-Infinity'),
    ),
    "truncated_json": BlobCase(Reason.BLOB_NOT_JSON, lambda: blob_bytes([track()])[:-5]),
    "over_nesting_limit": BlobCase(
        Reason.BLOB_NESTING_TOO_DEEP, lambda: blob_bytes([track(properties=nested(62))])
    ),
    "beyond_decoder_recursion": BlobCase(
        Reason.BLOB_NESTING_TOO_DEEP,
        lambda: b'{"batch":[' + b"[" * 50_000 + b"]" * 50_000 + b"]}",
    ),
    "top_level_array": BlobCase(Reason.BLOB_INVALID_SHAPE, lambda: b"[]"),
    "top_level_string": BlobCase(Reason.BLOB_INVALID_SHAPE, lambda: b'"batch"'),
    "no_batch": BlobCase(Reason.BLOB_INVALID_SHAPE, lambda: blob_bytes(REMOVE)),
    "batch_not_list": BlobCase(Reason.BLOB_INVALID_SHAPE, lambda: b'{"batch": {"a": 1}}'),
    "context_not_object": BlobCase(
        Reason.BLOB_INVALID_SHAPE, lambda: blob_bytes([track()], context=["x"])
    ),
    "sent_at_not_string": BlobCase(
        Reason.BLOB_INVALID_SHAPE, lambda: blob_bytes([track()], sentAt=12345)
    ),
    "sent_at_not_timestamp": BlobCase(
        Reason.BLOB_INVALID_SHAPE, lambda: blob_bytes([track()], sentAt="five past noon")
    ),
    "too_many_events": BlobCase(
        Reason.BLOB_TOO_MANY_EVENTS,
        lambda: blob_bytes([track(f"m-{i}") for i in range(3)]),
        Limits(max_events_per_blob=2),
    ),
}


@dataclass(frozen=True)
class EventCase:
    reason: Reason
    event: Any
    limits: Limits = DEFAULT_LIMITS
    detail_contains: str = ""


EVENT_CASES: dict[str, EventCase] = {
    "array": EventCase(Reason.EVENT_NOT_OBJECT, [track()]),
    "string": EventCase(Reason.EVENT_NOT_OBJECT, "track"),
    "null": EventCase(Reason.EVENT_NOT_OBJECT, None),
    "number": EventCase(Reason.EVENT_NOT_OBJECT, 42),
    "too_large": EventCase(
        Reason.EVENT_TOO_LARGE,
        track("m-big", properties={"pad": "x" * 600}),
        Limits(max_event_bytes=500),
    ),
    "unknown_type": EventCase(Reason.INVALID_TYPE, track(type="purchase")),
    "type_wrong_case": EventCase(Reason.INVALID_TYPE, track(type="Track")),
    "type_missing": EventCase(Reason.INVALID_TYPE, track(type=REMOVE)),
    "message_id_missing": EventCase(Reason.MISSING_MESSAGE_ID, track(messageId=REMOVE)),
    "message_id_empty": EventCase(Reason.MISSING_MESSAGE_ID, track(messageId="")),
    "message_id_null": EventCase(Reason.MISSING_MESSAGE_ID, track(messageId=None)),
    "message_id_101_chars": EventCase(Reason.MESSAGE_ID_TOO_LONG, track("m" * 101)),
    "no_identity": EventCase(Reason.MISSING_IDENTITY, track(anonymousId=REMOVE)),
    "empty_identities": EventCase(Reason.MISSING_IDENTITY, track(anonymousId="", userId=None)),
    "track_without_event": EventCase(Reason.MISSING_EVENT_NAME, track(event=REMOVE)),
    "track_empty_event": EventCase(Reason.MISSING_EVENT_NAME, track(event="")),
    "numeric_user_id": EventCase(
        Reason.INVALID_FIELD_TYPE,
        track(userId=12345),
        detail_contains="Expected `str | null`, got `int` - at `$.userId`",
    ),
    "numeric_message_id": EventCase(Reason.INVALID_FIELD_TYPE, track(messageId=7)),
    "boolean_anonymous_id": EventCase(Reason.INVALID_FIELD_TYPE, track(anonymousId=True)),
    "numeric_event_name": EventCase(Reason.INVALID_FIELD_TYPE, track(event=3)),
    "properties_array": EventCase(
        Reason.INVALID_FIELD_TYPE, track(properties=[1, 2]), detail_contains="$.properties"
    ),
    "properties_string": EventCase(Reason.INVALID_FIELD_TYPE, track(properties="{}")),
    "traits_number": EventCase(Reason.INVALID_FIELD_TYPE, track(traits=1.5)),
    "context_bool": EventCase(Reason.INVALID_FIELD_TYPE, track(context=False)),
    "timestamp_words": EventCase(
        Reason.INVALID_TIMESTAMP, track(timestamp="yesterday"), detail_contains="$.timestamp"
    ),
    "timestamp_number": EventCase(Reason.INVALID_TIMESTAMP, track(timestamp=1764417600000)),
    "original_timestamp_bad_month": EventCase(
        Reason.INVALID_TIMESTAMP, track(originalTimestamp="2026-13-01T00:00:00Z")
    ),
    "event_sent_at_bad": EventCase(Reason.INVALID_TIMESTAMP, track(sentAt="soon")),
    "timestamp_in_future": EventCase(
        Reason.TIMESTAMP_IN_FUTURE, track(timestamp=iso(RECEIVED_AT + timedelta(minutes=11)))
    ),
    "corrected_timestamp_in_future": EventCase(
        # the device clock jumped back between creating and sending the event
        Reason.TIMESTAMP_IN_FUTURE,
        track(
            originalTimestamp=iso(RECEIVED_AT + timedelta(hours=1)),
            sentAt=iso(RECEIVED_AT - timedelta(hours=1)),
        ),
    ),
    "timestamp_too_old": EventCase(
        Reason.TIMESTAMP_TOO_OLD, track(timestamp=iso(RECEIVED_AT - timedelta(days=31)))
    ),
    "original_timestamp_too_old_without_sent_at": EventCase(
        Reason.TIMESTAMP_TOO_OLD,
        track(originalTimestamp=iso(RECEIVED_AT - timedelta(days=40))),
    ),
}


def test_every_reason_has_a_case() -> None:
    covered = {case.reason for case in BLOB_CASES.values()} | {
        case.reason for case in EVENT_CASES.values()
    }
    assert covered == set(Reason)


@pytest.mark.parametrize("case", BLOB_CASES.values(), ids=BLOB_CASES.keys())
def test_blob_level_rejection_is_one_row(case: BlobCase) -> None:
    data = case.data()
    result = parse(data, case.limits)

    assert result.accepted == []
    assert len(result.rejected) == 1
    row = result.rejected[0]
    assert row.reason == case.reason.value
    assert row.message_id is None
    assert row.quarantine_id == blob_quarantine_id(data)
    assert is_blob_rejection(row)
    assert row.source == SOURCE
    assert row.received_at == RECEIVED_AT
    assert row.detail
    assert len(row.payload) <= 65_536


@pytest.mark.parametrize("case", EVENT_CASES.values(), ids=EVENT_CASES.keys())
def test_event_level_rejection_spares_its_siblings(case: EventCase) -> None:
    batch = [track("m-before"), case.event, track("m-after")]
    data = blob_bytes(batch)
    result = parse(data, case.limits)

    assert [row.message_id for row in result.accepted] == ["m-before", "m-after"]
    assert len(result.rejected) == 1
    row = result.rejected[0]
    assert row.reason == case.reason.value
    assert case.detail_contains in row.detail
    message_id = case.event.get("messageId") if isinstance(case.event, dict) else None
    readable_id = message_id if isinstance(message_id, str) and message_id else None
    assert row.message_id == readable_id
    # Keyed on the content when the messageId is readable, else on record and position.
    assert row.quarantine_id == event_quarantine_id(batch_spans(data)[1], readable_id, SOURCE, 1)
    assert not is_blob_rejection(row)
    assert msgspec.json.decode(row.payload) == case.event
    assert row.received_at == RECEIVED_AT
    assert row.source == SOURCE


def test_quarantine_keeps_a_string_message_id_even_when_the_event_fails_to_decode() -> None:
    result = parse(blob_bytes([track("m-kept", userId=5), track(7), [1]]))

    assert [row.message_id for row in result.rejected] == ["m-kept", None, None]


def test_blob_payload_is_the_decompressed_text() -> None:
    data = blob_bytes([track()], compress=True, sentAt="not a time")

    row = parse(data).rejected[0]

    assert row.reason == Reason.BLOB_INVALID_SHAPE
    assert row.payload == gzip.decompress(data).decode()


def test_blob_payload_falls_back_to_base64_of_the_raw_bytes() -> None:
    data = b'{"batch": ["\xff"]}'

    row = parse(data).rejected[0]

    assert row.reason == Reason.BLOB_INVALID_UTF8
    assert base64.b64decode(row.payload) == data
    assert "base64" in row.detail


def test_corrupt_gzip_payload_is_base64_of_what_was_received() -> None:
    data = blob_bytes([track()], compress=True)[:-12]

    row = parse(data).rejected[0]

    assert base64.b64decode(row.payload) == data


def test_blob_payload_is_truncated_and_says_so() -> None:
    data = blob_bytes([track(properties={"pad": "é" * 50_000})], sentAt="never")

    row = parse(data).rejected[0]

    assert row.reason == Reason.BLOB_INVALID_SHAPE
    assert len(row.payload.encode()) <= 65_536
    assert data.decode().startswith(row.payload)
    assert "first" in row.detail


def test_oversized_decompression_keeps_a_text_prefix_as_payload() -> None:
    text = blob_bytes([track(properties={"pad": "x" * 200_000})])

    row = parse(gzip.compress(text), Limits(max_decompressed_bytes=100_000)).rejected[0]

    assert row.reason == Reason.BLOB_DECOMPRESSED_TOO_LARGE
    assert row.payload == text[:65_536].decode()
    assert "first 65536 bytes" in row.detail
