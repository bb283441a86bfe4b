"""Client blobs: small hand-made ones for the contract tests, and realistic ones (sizes,
nesting, ids and timestamps as a mobile app sends them) for properties and benchmarks."""

from __future__ import annotations

import gzip
import random
import uuid
from datetime import UTC, datetime, timedelta
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


# The realistic blobs are sent at this instant (their events up to an hour before).
REALISTIC_RECEIVED_AT = datetime(2026, 11, 29, 12, 0, 6, tzinfo=UTC)
EVENT_NAMES = ["Video Recorded", "Video Shared", "Feed Scrolled", "Purchase Completed"]


def realistic_event(rng: random.Random, with_context: bool) -> dict[str, object]:
    """About 500 bytes: ids, a timestamp, nested properties, sometimes an event-level context."""
    kind = rng.choices(["track", "screen", "identify"], weights=[80, 15, 5])[0]
    original = REALISTIC_RECEIVED_AT - timedelta(seconds=rng.uniform(1, 3600))
    event: dict[str, object] = {
        "type": kind,
        "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128))),
        "userId": f"user-{rng.randrange(10**6)}" if rng.random() < 0.6 else None,
        "originalTimestamp": original.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    if kind == "track":
        event["event"] = rng.choice(EVENT_NAMES)
        event["properties"] = {
            "duration_ms": rng.randrange(100, 60_000),
            "quality": rng.choice(["sd", "hd", "4k"]),
            "filters": [rng.choice(["mono", "warm", "cool"]) for _ in range(3)],
            "location": {"lat": rng.uniform(-90, 90), "lon": rng.uniform(-180, 180)},
            "experiment": {"id": "exp-42", "variant": rng.choice("ABC"), "flags": {"x": True}},
            "caption": "a short caption with some text " * 2,
        }
    elif kind == "screen":
        event["name"] = rng.choice(["Feed", "Camera", "Profile", "Settings"])
        event["properties"] = {"referrer": "push", "tab": {"index": 2, "label": "Following"}}
    else:
        event["traits"] = {"plan": "pro", "email": "someone@example.com", "age": 31}
    if with_context:
        event["context"] = {"locale": "en-US", "network": {"wifi": True}, "ip": "203.0.113.9"}
    return event


def realistic_blobs(total_events: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    blobs = []
    made = 0
    while made < total_events:
        size = min(rng.randint(50, 200), total_events - made)
        blob = {
            "sentAt": REALISTIC_RECEIVED_AT.isoformat().replace("+00:00", "Z"),
            "context": {
                "app": {"name": "demo", "version": "4.2.0", "build": "420"},
                "os": {"name": "iOS", "version": "18.1"},
                "device": {"id": str(uuid.UUID(int=rng.getrandbits(128))), "model": "iPhone16,2"},
                "library": {"name": "analytics-pipeline-python", "version": "0.1.0"},
            },
            "batch": [realistic_event(rng, rng.random() < 0.1) for _ in range(size)],
        }
        blobs.append(gzip.compress(msgspec.json.encode(blob), compresslevel=6))
        made += size
    return blobs
