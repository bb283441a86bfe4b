"""Timestamps as the contract reads them: RFC 3339 in C, other ISO 8601 forms in Python."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

_DATETIME_DECODER = msgspec.json.Decoder(datetime)
_ENCODER = msgspec.json.Encoder()


def as_utc(value: datetime) -> datetime:
    """Aware UTC; naive values are UTC."""
    tzinfo = value.tzinfo
    if tzinfo is UTC:
        return value
    if tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_timestamp_text(text: str) -> datetime:
    """RFC 3339 through msgspec's C parser, other ISO 8601 forms through fromisoformat."""
    try:
        return _DATETIME_DECODER.decode(_ENCODER.encode(text))
    except (msgspec.DecodeError, msgspec.EncodeError):
        return datetime.fromisoformat(text)
