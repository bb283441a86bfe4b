"""Event level: one batch element judged on its own (type, ids, timestamps and skew
correction, JSON-valued fields, blob context merged in) into an `EventRow`, or rejected.

Each event is decoded from its span into a typed Struct whose JSON-valued fields (properties,
traits, context) stay `msgspec.Raw`, so they are never re-parsed unless a blob-level context
has to be merged in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from analytics_pipeline.contract.blob import Blob
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.quarantine_ids import event_quarantine_id
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rejections import EventRejected, clip, error_path
from analytics_pipeline.contract.rows import EVENT_TYPES, NULL_JSON, EventRow, QuarantineRow
from analytics_pipeline.contract.timestamps import as_utc, parse_timestamp_text

_TIMESTAMP_PATHS = frozenset({"$.timestamp", "$.originalTimestamp", "$.sentAt"})
_OPEN_BRACE = ord("{")


class _EventFields(msgspec.Struct, rename="camel", gc=False):
    """Every event field but the timestamps, whose type depends on the decode path."""

    type: str | None = None
    event: str | None = None
    name: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    properties: msgspec.Raw = NULL_JSON
    traits: msgspec.Raw = NULL_JSON
    context: msgspec.Raw = NULL_JSON


class WireEvent(_EventFields, gc=False):
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None


class _WireEventTextTimes(_EventFields, gc=False):
    """The slow path for timestamps msgspec's RFC 3339 parser refuses."""

    timestamp: str | None = None
    original_timestamp: str | None = None
    sent_at: str | None = None


class _MessageIdProbe(msgspec.Struct, rename="camel", gc=False):
    message_id: Any = None


EVENT_DECODER = msgspec.json.Decoder(WireEvent)
_EVENT_TEXT_TIMES_DECODER = msgspec.json.Decoder(_WireEventTextTimes)
_MESSAGE_ID_DECODER = msgspec.json.Decoder(_MessageIdProbe)
_OBJECT_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENCODER = msgspec.json.Encoder()


class BlobState:
    """What every event of one blob shares, looked up once per blob rather than per event."""

    __slots__ = (
        "context",
        "context_json",
        "earliest",
        "latest",
        "max_id_chars",
        "received_at",
        "sent_at",
    )

    def __init__(self, blob: Blob, received_at: datetime, limits: Limits) -> None:
        self.received_at = received_at
        self.sent_at = blob.sent_at_parsed
        self.context = blob.context
        self.context_json = blob.context_json
        self.max_id_chars = limits.max_message_id_chars
        try:
            self.latest = received_at + timedelta(seconds=limits.future_tolerance_seconds)
        except OverflowError:
            self.latest = datetime.max.replace(tzinfo=UTC)
        try:
            self.earliest = received_at - timedelta(days=limits.late_arrival_days)
        except OverflowError:
            self.earliest = datetime.min.replace(tzinfo=UTC)


def decode_event_after_error(raw: msgspec.Raw, message: str) -> WireEvent:
    """Classify a failed typed decode, or recover an ISO 8601 timestamp msgspec refused."""
    path = error_path(message)
    if path is None:  # an error about the root value: it is not an object
        raise EventRejected(Reason.EVENT_NOT_OBJECT, message)
    if path not in _TIMESTAMP_PATHS:
        raise EventRejected(Reason.INVALID_FIELD_TYPE, message)
    return _decode_event_text_times(raw)


def _decode_event_text_times(raw: msgspec.Raw) -> WireEvent:
    """Retry an event whose timestamp msgspec refused, parsing timestamps with fromisoformat."""
    try:
        text_wire = _EVENT_TEXT_TIMES_DECODER.decode(raw)
    except msgspec.ValidationError as error:
        message = str(error)
        path = error_path(message)
        reason = Reason.INVALID_TIMESTAMP if path in _TIMESTAMP_PATHS else Reason.INVALID_FIELD_TYPE
        raise EventRejected(reason, message) from None
    parsed: dict[str, datetime | None] = {}
    for attribute, value in (
        ("timestamp", text_wire.timestamp),
        ("original_timestamp", text_wire.original_timestamp),
        ("sent_at", text_wire.sent_at),
    ):
        try:
            parsed[attribute] = None if value is None else parse_timestamp_text(value)
        except ValueError:
            wire_name = _WireEventTextTimes.__struct_encode_fields__[
                _WireEventTextTimes.__struct_fields__.index(attribute)
            ]
            raise EventRejected(
                Reason.INVALID_TIMESTAMP,
                f"not an ISO 8601 timestamp: {clip(value)!r} - at `$.{wire_name}`",
            ) from None
    return WireEvent(**{**msgspec.structs.asdict(text_wire), **parsed})


def event_row(wire: WireEvent, blob: BlobState) -> EventRow:
    event_type = wire.type
    if event_type not in EVENT_TYPES:
        raise EventRejected(
            Reason.INVALID_TYPE,
            f"type {clip(event_type)!r} is not one of {', '.join(sorted(EVENT_TYPES))}",
        )
    message_id = wire.message_id
    if not message_id:
        raise EventRejected(Reason.MISSING_MESSAGE_ID, "messageId is missing or empty")
    max_id_chars = blob.max_id_chars
    if len(message_id) > max_id_chars:
        raise EventRejected(
            Reason.MESSAGE_ID_TOO_LONG,
            f"messageId has {len(message_id)} characters; the limit is {max_id_chars}",
        )
    if not (wire.user_id or wire.anonymous_id):
        raise EventRejected(
            Reason.MISSING_IDENTITY, "neither userId nor anonymousId is a non-empty string"
        )
    if event_type == "track":
        name = wire.event
        if not name:
            raise EventRejected(Reason.MISSING_EVENT_NAME, "track event without `event`")
    elif event_type == "screen" or event_type == "page":
        name = wire.name
    else:
        name = None

    properties = wire.properties
    traits = wire.traits
    context = wire.context
    if properties is not NULL_JSON:
        _require_object_or_null(properties, "properties")
    if traits is not NULL_JSON:
        _require_object_or_null(traits, "traits")
    if context is NULL_JSON or context == NULL_JSON:
        context = blob.context_json
    else:
        _require_object_or_null(context, "context")
        if blob.context is not None:
            merged = dict(blob.context)
            merged.update(_OBJECT_DECODER.decode(context))
            context = msgspec.Raw(_ENCODER.encode(merged))

    received_at = blob.received_at
    original_timestamp = wire.original_timestamp
    sent_at = wire.sent_at
    timestamp = wire.timestamp
    try:
        if original_timestamp is not None and original_timestamp.tzinfo is not UTC:
            original_timestamp = as_utc(original_timestamp)
        if sent_at is None:
            sent_at = blob.sent_at
        elif sent_at.tzinfo is not UTC:
            sent_at = as_utc(sent_at)
        if timestamp is not None:
            if timestamp.tzinfo is not UTC:
                timestamp = as_utc(timestamp)
        elif original_timestamp is None:
            timestamp = received_at
        elif sent_at is None:
            timestamp = original_timestamp
        else:
            timestamp = received_at - (sent_at - original_timestamp)
    except OverflowError:
        raise EventRejected(
            Reason.INVALID_TIMESTAMP, "timestamps are out of the representable range"
        ) from None
    if timestamp > blob.latest:
        raise EventRejected(
            Reason.TIMESTAMP_IN_FUTURE,
            f"timestamp {timestamp.isoformat()} is after {blob.latest.isoformat()} "
            f"(received_at plus the future tolerance)",
        )
    if timestamp < blob.earliest:
        raise EventRejected(
            Reason.TIMESTAMP_TOO_OLD,
            f"timestamp {timestamp.isoformat()} is before {blob.earliest.isoformat()} "
            f"(received_at minus the late-arrival window)",
        )

    return EventRow(
        message_id=message_id,
        type=event_type,
        event=name,
        user_id=wire.user_id,
        anonymous_id=wire.anonymous_id,
        group_id=wire.group_id,
        previous_id=wire.previous_id,
        timestamp=timestamp,
        original_timestamp=original_timestamp,
        sent_at=sent_at,
        received_at=received_at,
        properties=properties,
        context=context,
        traits=traits,
    )


def _require_object_or_null(raw: msgspec.Raw, field_name: str) -> None:
    first = memoryview(raw)[0]
    if first != _OPEN_BRACE and raw != NULL_JSON:
        raise EventRejected(
            Reason.INVALID_FIELD_TYPE,
            f"Expected `object | null`, got `{_json_kind(first)}` - at `$.{field_name}`",
        )


def _json_kind(first_byte: int) -> str:
    return {ord("["): "array", ord('"'): "str", ord("t"): "bool", ord("f"): "bool"}.get(
        first_byte, "number"
    )


def event_quarantine(
    raw: msgspec.Raw, index: int, rejection: EventRejected, received_at: datetime, source: str
) -> QuarantineRow:
    raw_bytes = bytes(raw)
    message_id = _probe_message_id(raw_bytes)
    return QuarantineRow(
        quarantine_id=event_quarantine_id(raw_bytes, message_id, source, index),
        reason=rejection.reason.value,
        detail=rejection.detail,
        payload=raw_bytes.decode("utf-8", errors="replace"),  # valid: the blob was checked
        message_id=message_id,
        received_at=received_at,
        source=source,
    )


def _probe_message_id(raw_bytes: bytes) -> str | None:
    try:
        value = _MESSAGE_ID_DECODER.decode(raw_bytes).message_id
    except (msgspec.DecodeError, RecursionError):
        return None
    return value if isinstance(value, str) and value else None
