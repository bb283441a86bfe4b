"""The second wire format: pre-aggregated batches from the Lambda to the loader, through SQS.

A batch is gzip-compressed NDJSON of `EventRow` (kind `events`) or `QuarantineRow` (kind
`quarantine`) for one day. It travels inline in the SQS message body (base64, because SQS bodies
are text) or, when too big for one message, as an S3 object with a pointer body. The header rides
in SQS message attributes so the sensor can route a message without reading its body.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from analytics_pipeline.contract.rows import EventRow, QuarantineRow

FORMAT = "ndjson+gzip"


class BatchKind(StrEnum):
    EVENTS = "events"
    QUARANTINE = "quarantine"


class Payload(StrEnum):
    INLINE = "inline"  # body = base64(gzip(ndjson))
    S3 = "s3"  # body = JSON {"bucket": ..., "key": ...}; the object holds gzip(ndjson)


@dataclass(frozen=True)
class BatchHeader:
    """What the sensor needs to know about a batch without reading it."""

    batch_id: str
    kind: BatchKind
    day: str  # YYYY-MM-DD (UTC) of `timestamp` for events, of `received_at` for quarantine
    row_count: int
    min_timestamp: str
    max_timestamp: str
    payload: Payload

    def to_message_attributes(self) -> dict[str, dict[str, str]]:
        values = {
            "batch_id": self.batch_id,
            "kind": self.kind.value,
            "day": self.day,
            "row_count": str(self.row_count),
            "min_timestamp": self.min_timestamp,
            "max_timestamp": self.max_timestamp,
            "payload": self.payload.value,
            "format": FORMAT,
        }
        return {
            name: {"DataType": "Number" if name == "row_count" else "String", "StringValue": value}
            for name, value in values.items()
        }

    @classmethod
    def from_message_attributes(cls, attributes: dict[str, Any]) -> BatchHeader:
        """Raises `InvalidBatchMessage` when an attribute is missing or malformed."""

        def value(name: str) -> str:
            try:
                return str(attributes[name]["StringValue"])
            except (KeyError, TypeError) as error:
                raise InvalidBatchMessage(f"missing message attribute {name!r}") from error

        try:
            return cls(
                batch_id=value("batch_id"),
                kind=BatchKind(value("kind")),
                day=value("day"),
                row_count=int(value("row_count")),
                min_timestamp=value("min_timestamp"),
                max_timestamp=value("max_timestamp"),
                payload=Payload(value("payload")),
            )
        except ValueError as error:
            raise InvalidBatchMessage(str(error)) from error


class InvalidBatchMessage(ValueError):
    """An SQS message that is not a batch this pipeline wrote."""


class S3Pointer(msgspec.Struct):
    bucket: str
    key: str


_encoder = msgspec.json.Encoder()
_event_lines_decoder = msgspec.json.Decoder(EventRow)
_quarantine_lines_decoder = msgspec.json.Decoder(QuarantineRow)


def encode_rows(rows: Sequence[EventRow] | Sequence[QuarantineRow]) -> bytes:
    """NDJSON of the rows."""
    return _encoder.encode_lines(rows)


def decompress(data: bytes) -> bytes:
    return zlib.decompress(data, wbits=31)


def inline_body(compressed: bytes) -> str:
    return base64.b64encode(compressed).decode("ascii")


def body_from_inline(body: str) -> bytes:
    return base64.b64decode(body, validate=True)


def s3_pointer_body(bucket: str, key: str) -> str:
    return _encoder.encode(S3Pointer(bucket=bucket, key=key)).decode()


def s3_pointer_from_body(body: str) -> S3Pointer:
    return msgspec.json.decode(body, type=S3Pointer)


def s3_key(kind: BatchKind, day: str, batch_id: str, area: str = "oversize") -> str:
    """One key layout for every batch object: `<area>/<kind>/<day>/<batch_id>.ndjson.gz`."""
    return f"{area}/{kind.value}/{day}/{batch_id}.ndjson.gz"


def batch_id_for(kind: BatchKind, day: str, row_keys: Iterable[str]) -> str:
    """Deterministic id from the batch's content: a retried invocation yields the same id."""
    digest = hashlib.sha256(f"{kind.value}|{day}".encode())
    for key in row_keys:
        digest.update(b"\x00")
        digest.update(key.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def decode_event_rows(ndjson: bytes) -> list[EventRow]:
    return [_event_lines_decoder.decode(line) for line in ndjson.splitlines() if line]


def decode_quarantine_rows(ndjson: bytes) -> list[QuarantineRow]:
    return [_quarantine_lines_decoder.decode(line) for line in ndjson.splitlines() if line]
