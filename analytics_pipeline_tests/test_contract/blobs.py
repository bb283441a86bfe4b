"""Builders for client blobs, shared by the contract tests."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import msgspec

from analytics_pipeline.contract import Limits, ParseResult, parse_blob

RECEIVED_AT = datetime(2026, 11, 29, 12, 0, 6, tzinfo=UTC)
SENT_AT = "2026-11-29T12:00:05.120Z"
SOURCE = "kinesis:analytics-events:shardId-000000000000:49650000000000000000000000000001"
BLOB_CONTEXT: dict[str, Any] = {
    "app": {"name": "demo", "version": "4.2.0"},
    "os": {"name": "iOS", "version": "18.1"},
    "library": {"name": "analytics-pipeline-python", "version": "0.1.0"},
}


def track(message_id: str = "m-1", **fields: Any) -> dict[str, Any]:
    """A valid track event; keyword arguments override or add fields (None removes one)."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Video Recorded",
        "messageId": message_id,
        "anonymousId": "a-123",
        "originalTimestamp": "2026-11-29T11:59:58.001Z",
        "properties": {"duration_ms": 5400},
    }
    event.update(fields)
    return {key: value for key, value in event.items() if value is not _REMOVE}


_REMOVE = object()
REMOVE: Any = _REMOVE


def blob_bytes(batch: Any, *, compress: bool = False, **blob_fields: Any) -> bytes:
    blob: dict[str, Any] = {"sentAt": SENT_AT, "context": BLOB_CONTEXT, "batch": batch}
    blob.update(blob_fields)
    blob = {key: value for key, value in blob.items() if value is not _REMOVE}
    data = msgspec.json.encode(blob)
    return gzip.compress(data) if compress else data


def parse(data: bytes, limits: Limits | None = None, source: str = SOURCE) -> ParseResult:
    if limits is None:
        return parse_blob(data, received_at=RECEIVED_AT, source=source)
    return parse_blob(data, received_at=RECEIVED_AT, source=source, limits=limits)


def batch_spans(data: bytes) -> list[bytes]:
    """The batch elements' exact bytes, as the parser cuts them (a readable blob, plain or gzip).

    A rejected event's payload is its span verbatim, which is how a test finds the position
    of a quarantine row whose id is keyed on its content.
    """
    text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    batch = msgspec.json.decode(text, type=dict[str, msgspec.Raw])["batch"]
    return [bytes(span) for span in msgspec.json.decode(batch, type=list[msgspec.Raw])]


def nested(depth: int) -> Any:
    """An object `depth` levels deep: {"a": {"a": ... {}}}."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value
