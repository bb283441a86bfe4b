"""Wire encoding of the client: timestamps, one event, one blob.

Events are encoded to JSON bytes once, when they are enqueued: the byte thresholds then count real
bytes, a caller mutating its `properties` dict afterwards cannot change what is sent, and a blob
is re-assembled by concatenation on every send attempt (each attempt needs a fresh `sentAt`).
"""

from __future__ import annotations

import gzip as gzip_module
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

GZIP_LEVEL = 6

# A blob is `{"sentAt":"<24 chars>","context":<context>,"batch":[<e1>,<e2>,...]}`.
_SENT_AT_PREFIX = b'{"sentAt":"'
_CONTEXT_PREFIX = b'","context":'
_BATCH_PREFIX = b',"batch":['
_BATCH_SUFFIX = b"]}"
_TIMESTAMP_CHARS = len("2026-11-29T12:00:05.120Z")
BLOB_FRAME_BYTES = (
    len(_SENT_AT_PREFIX)
    + _TIMESTAMP_CHARS
    + len(_CONTEXT_PREFIX)
    + len(_BATCH_PREFIX)
    + len(_BATCH_SUFFIX)
)
"""Bytes of a blob that are neither context nor events (commas between events not included)."""


def _encode_unknown(value: Any) -> Any:
    """Objects JSON has no type for are sent as their `str()`, as Segment SDKs do, not refused."""
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_encode_unknown)


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and `Z`; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def encode_json(value: Any) -> bytes:
    return _encoder.encode(value)


def blob_bytes(context_json: bytes, event_bytes: int, event_count: int) -> int:
    """Uncompressed size of a blob holding events of `event_bytes` bytes in total."""
    return BLOB_FRAME_BYTES + len(context_json) + event_bytes + max(event_count - 1, 0)


def gzip_overhead(size: int) -> int:
    """Worst-case growth of `size` bytes under gzip: incompressible data, stored blocks."""
    return size // 1000 + 128


def encode_blob(
    sent_at: str, context_json: bytes, events: Sequence[bytes], *, compress: bool
) -> bytes:
    body = b"".join(
        (
            _SENT_AT_PREFIX,
            sent_at.encode("ascii"),
            _CONTEXT_PREFIX,
            context_json,
            _BATCH_PREFIX,
            b",".join(events),
            _BATCH_SUFFIX,
        )
    )
    if compress:
        return gzip_module.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return body
