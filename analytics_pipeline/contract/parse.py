"""The wire contract: one client blob (a Kinesis record) in, normalised rows out.

This is the Lambda's hot path, so the design is "decode once, in C, and look at as little as
possible in Python": the blob is decoded with `batch` as a list of `msgspec.Raw` spans, each
event is decoded from its span into a typed Struct whose JSON-valued fields (properties,
traits, context) stay `msgspec.Raw`, so they are never re-parsed unless a blob-level context
has to be merged in.

Rejections come at two levels. A blob nothing can be read from (too big, bad gzip, bad UTF-8,
not JSON, too deep, wrong shape, too many events) becomes ONE `QuarantineRow`; otherwise every
event is judged on its own and a bad one never takes its siblings down. `parse_blob` never
raises: every failure is a row with a `Reason`.

Decisions worth knowing (they are part of the contract):

* Types are strict, as in the Segment spec: a numeric `userId`/`anonymousId`/`messageId` is
  rejected as INVALID_FIELD_TYPE rather than coerced (coercion would make `1` and `"1"` the
  same user silently, and `1.0` something else).
* Timestamps are RFC 3339 as msgspec reads them (also a space instead of `T`, `+HHMM`
  offsets, nanoseconds truncated); anything else `datetime.fromisoformat` accepts (other
  ISO 8601 forms, e.g. a bare date) is accepted on a slower fallback path. A timestamp field
  holding a non-string is INVALID_TIMESTAMP too. Naive values are UTC; all output is UTC.
* Nesting depth counts the whole blob document (blob object = 1, `batch` = 2, an event = 3),
  so one over-deep event rejects the blob (BLOB_NESTING_TOO_DEEP) - there is no per-event code,
  and such input is a client bug or an attack, not data.
* An empty string counts as missing for `messageId`, `userId`/`anonymousId` and track's `event`.
* `groupId` (group) and `previousId` (alias) are kept when present but not required.
* Gzip is detected by its magic bytes; concatenated gzip members (RFC 1952) are accepted, and
  the decompression cap covers all of them together. Anything after a member that is not
  another member is BLOB_GZIP_INVALID.
* Quarantine ids are what was received, not where: a rejected event with a readable messageId
  is keyed on that messageId and its bytes, a rejected blob on its bytes, so a client resend
  (a new Kinesis record) is the same row as the first copy. Only an event without a readable
  messageId is keyed on its record and position (`event_quarantine_id`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rows import EVENT_TYPES, NULL_JSON, EventRow, QuarantineRow

DEFAULT_LIMITS = Limits()

GZIP_MAGIC = b"\x1f\x8b"
# A blob-level quarantine row keeps at most this much of the blob: enough to diagnose, not
# enough to turn the quarantine table into a second copy of an attack.
BLOB_PAYLOAD_CAP_BYTES = 65_536
# Blobs with at least this many commas get their batch counted before it is decoded to a list
# (one object per element; at 64k elements that is ~4 MB, at the 8 MiB cap ~240 MB).
PRECOUNT_MIN_COMMAS = 65_536
# The reasons that reject a whole blob (the others reject one event); reason codes are stable.
BLOB_REASONS = frozenset(reason.value for reason in Reason if reason.value.startswith("blob_"))
_TIMESTAMP_PATHS = frozenset({"$.timestamp", "$.originalTimestamp", "$.sentAt"})
_ERROR_PATH_MARKER = " - at `"


@dataclass(slots=True)
class ParseResult:
    accepted: list[EventRow] = field(default_factory=list)
    rejected: list[QuarantineRow] = field(default_factory=list)


class _WireBlob(msgspec.Struct, rename="camel", gc=False):
    # context as dict[str, Raw]: validates "object" in C and is exactly what a merge needs.
    batch: list[msgspec.Raw]
    sent_at: str | None = None
    context: dict[str, msgspec.Raw] | None = None


class _WireBlobSpan(msgspec.Struct, gc=False):
    """The batch as one span: lets us count its elements before allocating one per element."""

    batch: msgspec.Raw = NULL_JSON


class _WireEvent(msgspec.Struct, rename="camel", gc=False):
    type: str | None = None
    event: str | None = None
    name: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    properties: msgspec.Raw = NULL_JSON
    traits: msgspec.Raw = NULL_JSON
    context: msgspec.Raw = NULL_JSON


class _WireEventTextTimes(msgspec.Struct, rename="camel", gc=False):
    """The slow path for timestamps msgspec's RFC 3339 parser refuses."""

    type: str | None = None
    event: str | None = None
    name: str | None = None
    message_id: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    timestamp: str | None = None
    original_timestamp: str | None = None
    sent_at: str | None = None
    properties: msgspec.Raw = NULL_JSON
    traits: msgspec.Raw = NULL_JSON
    context: msgspec.Raw = NULL_JSON


class _MessageIdProbe(msgspec.Struct, rename="camel", gc=False):
    message_id: Any = None


_BLOB_DECODER = msgspec.json.Decoder(_WireBlob)
_BLOB_SPAN_DECODER = msgspec.json.Decoder(_WireBlobSpan)
_EVENT_DECODER = msgspec.json.Decoder(_WireEvent)
_EVENT_TEXT_TIMES_DECODER = msgspec.json.Decoder(_WireEventTextTimes)
_MESSAGE_ID_DECODER = msgspec.json.Decoder(_MessageIdProbe)
_OBJECT_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_DATETIME_DECODER = msgspec.json.Decoder(datetime)
_ENCODER = msgspec.json.Encoder()

_OPEN_BRACE = ord("{")
_BRACKETS_AS_PARENS = bytes.maketrans(b"{[}]", b"(())")  # valid JSON pairs them properly
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'{}[]"')
_NOT_BRACKETS_QUOTES_OR_COMMAS = bytes(b for b in range(256) if b not in b'{}[]",')
_STRING_IN_PROJECTION = re.compile(rb'"[^"]*"')
_INNERMOST_GROUP = re.compile(rb"\([^()]*\)")


class _BlobRejected(Exception):
    def __init__(self, reason: Reason, detail: str, text: bytes | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.text = text  # the decoded blob text when we have it, for the payload


class _EventRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_blob(
    data: bytes, *, received_at: datetime, source: str, limits: Limits = DEFAULT_LIMITS
) -> ParseResult:
    """Turn one client blob into accepted rows and quarantine rows; never raises."""
    received_at = _as_utc(received_at)
    try:
        blob = _decode_blob(data, limits)
    except _BlobRejected as rejection:
        return ParseResult(rejected=[_blob_quarantine(data, rejection, received_at, source)])

    result = ParseResult()
    accept = result.accepted.append
    reject = result.rejected.append
    state = _BlobState(blob, received_at, limits)
    decode = _EVENT_DECODER.decode
    max_event_bytes = limits.max_event_bytes
    for index, raw in enumerate(blob.wire.batch):
        try:
            if len(raw) > max_event_bytes:
                raise _EventRejected(
                    Reason.EVENT_TOO_LARGE,
                    f"event is {len(raw)} bytes; the limit is {max_event_bytes}",
                )
            try:
                wire = decode(raw)
            except msgspec.ValidationError as error:
                wire = _decode_event_after_error(raw, str(error))
            accept(_event_row(wire, state))
        except _EventRejected as rejection:
            reject(_event_quarantine(raw, index, rejection, received_at, source))
    return result


# --- blob level -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Blob:
    wire: _WireBlob
    sent_at_parsed: datetime | None
    context: dict[str, msgspec.Raw] | None  # None when absent or empty: nothing to merge
    context_json: msgspec.Raw  # the blob context as JSON, for events without their own


def _decode_blob(data: bytes, limits: Limits) -> _Blob:
    if len(data) > limits.max_blob_bytes:
        raise _BlobRejected(
            Reason.BLOB_TOO_LARGE,
            f"blob is {len(data)} bytes; the limit is {limits.max_blob_bytes}",
        )
    text = _gunzip(data, limits.max_decompressed_bytes) if data[:2] == GZIP_MAGIC else data
    # msgspec does not validate UTF-8 inside spans it keeps as Raw, so check it here;
    # isascii() is a word-at-a-time scan, the decode only runs for non-ASCII blobs.
    if not text.isascii():
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _BlobRejected(Reason.BLOB_INVALID_UTF8, f"blob is not UTF-8: {error}") from None
    # Fewer commas: too few elements for the list decode below to cost much memory, and the
    # count after it is exact. Checked with the span first only above that (attack-sized).
    precount_at = max(limits.max_events_per_blob, PRECOUNT_MIN_COMMAS)
    if len(text) > precount_at and text.count(b",") >= precount_at:
        events = _batch_length_if_over(text, limits.max_events_per_blob, limits.max_nesting_depth)
        if events is not None:
            raise _BlobRejected(
                Reason.BLOB_TOO_MANY_EVENTS,
                f"blob has {events} events; the limit is {limits.max_events_per_blob}",
                text,
            )
    try:
        wire = _BLOB_DECODER.decode(text)
    except msgspec.ValidationError as error:
        raise _BlobRejected(Reason.BLOB_INVALID_SHAPE, str(error), text) from None
    except msgspec.DecodeError as error:
        raise _BlobRejected(Reason.BLOB_NOT_JSON, str(error), text) from None
    except RecursionError:
        raise _BlobRejected(
            Reason.BLOB_NESTING_TOO_DEEP, "blob nests deeper than the decoder can follow", text
        ) from None
    if len(wire.batch) > limits.max_events_per_blob:
        raise _BlobRejected(
            Reason.BLOB_TOO_MANY_EVENTS,
            f"blob has {len(wire.batch)} events; the limit is {limits.max_events_per_blob}",
            text,
        )
    context_json = _ENCODER.encode(wire.context) if wire.context else b"null"
    if _nesting_depth_exceeds(text, limits.max_nesting_depth):
        raise _BlobRejected(
            Reason.BLOB_NESTING_TOO_DEEP,
            f"blob nests deeper than {limits.max_nesting_depth} levels",
            text,
        )
    sent_at = None
    if wire.sent_at is not None:
        try:
            sent_at = _as_utc(_parse_timestamp_text(wire.sent_at))
        except (ValueError, OverflowError):
            raise _BlobRejected(
                Reason.BLOB_INVALID_SHAPE,
                f"blob sentAt is not an ISO 8601 timestamp: {_clip(wire.sent_at)!r}",
                text,
            ) from None
    return _Blob(
        wire=wire,
        sent_at_parsed=sent_at,
        context=wire.context or None,
        context_json=msgspec.Raw(context_json),
    )


def _gunzip(data: bytes, cap: int) -> bytes:
    """Decompress every gzip member, never producing more than `cap` + 1 bytes in total."""
    parts: list[bytes] = []
    total = 0
    remaining = data
    while True:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            chunk = decompressor.decompress(remaining, cap + 1 - total)
        except zlib.error as error:
            raise _BlobRejected(Reason.BLOB_GZIP_INVALID, f"gzip is corrupt: {error}") from None
        total += len(chunk)
        parts.append(chunk)
        if total > cap:
            raise _BlobRejected(
                Reason.BLOB_DECOMPRESSED_TOO_LARGE,
                f"blob decompresses to more than {cap} bytes",
                b"".join(parts)[: BLOB_PAYLOAD_CAP_BYTES + 1],  # +1: "it was cut"
            )
        if not decompressor.eof:
            raise _BlobRejected(Reason.BLOB_GZIP_INVALID, "gzip is truncated")
        remaining = decompressor.unused_data
        if not remaining:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if remaining[:2] != GZIP_MAGIC:
            raise _BlobRejected(Reason.BLOB_GZIP_INVALID, "bytes after the end of the gzip data")


def _batch_length_if_over(text: bytes, limit: int, max_depth: int) -> int | None:
    """The batch's element count when over `limit`, counted without decoding the elements.

    Decoding `batch` as a list allocates one object per element: a blob of millions of tiny
    elements (`[0,0,...]`, within the decompression cap) cost ~240 MB before the count could
    be checked. Here the batch is one span; brackets, quotes and commas are projected out as
    in `_nesting_depth_exceeds`, strings dropped, nested groups peeled, and the commas left
    counted. None: within the limit, or not a readable blob (the full decode says why).
    """
    try:
        span = bytes(_BLOB_SPAN_DECODER.decode(text).batch)
    except (msgspec.DecodeError, RecursionError):
        return None
    if span[:1] != b"[" or span.count(b",") < limit:
        return None
    if b"\\" in span:
        span = span.replace(b"\\\\", b"").replace(b'\\"', b"")
    projection = span.translate(_BRACKETS_AS_PARENS, _NOT_BRACKETS_QUOTES_OR_COMMAS)
    inner = _STRING_IN_PROJECTION.sub(b"", projection)[1:-1]
    for _ in range(max_depth):
        if b"(" not in inner:
            break
        inner = _INNERMOST_GROUP.sub(b"", inner)
    if b"(" in inner:
        return None  # deeper than the limit: the depth check rejects it
    events = inner.count(b",") + 1
    return events if events > limit else None


def _nesting_depth_exceeds(text: bytes, max_depth: int) -> bool:
    """Whether valid JSON nests deeper than `max_depth`, at C speed for ordinary blobs.

    Project the text onto quotes and brackets (one `translate`), drop the string contents,
    then peel the bracket tree one level per `replace(b"()", b"")` pass: a balanced sequence
    empties after exactly as many passes as it is deep.
    """
    if b"\\" in text:
        # In valid JSON a backslash only starts a string escape: drop escaped backslashes, then
        # escaped quotes, so every quote left delimits a string.
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    projection = text.translate(_BRACKETS_AS_PARENS, _NOT_BRACKETS_OR_QUOTES)
    if len(projection) <= max_depth:  # not even that many brackets and quotes in total
        return False
    # Quotes alternate open/close, so removing any two adjacent ones keeps every remaining
    # bracket on the same side of the string boundaries: only strings with brackets survive.
    projection = projection.replace(b'""', b"")
    if b'"' in projection:
        projection = b"".join(projection.split(b'"')[::2])
    for _ in range(max_depth):
        if not projection:
            return False
        projection = projection.replace(b"()", b"")
    return bool(projection)


class GzipRejected(ValueError):
    """Gzip `gunzip` refused: `reason` is BLOB_GZIP_INVALID or BLOB_DECOMPRESSED_TOO_LARGE."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def gunzip(data: bytes, cap: int) -> bytes:
    """The blob rules for gzip (every member, never more than `cap` + 1 bytes inflated) for
    other readers of client bytes: the HTTP collector's request bodies."""
    try:
        return _gunzip(data, cap)
    except _BlobRejected as rejection:
        raise GzipRejected(rejection.reason, rejection.detail) from None


def _blob_quarantine(
    data: bytes, rejection: _BlobRejected, received_at: datetime, source: str
) -> QuarantineRow:
    payload, note = _blob_payload(data, rejection.text)
    return QuarantineRow(
        quarantine_id=blob_quarantine_id(data),
        reason=rejection.reason.value,
        detail=f"{rejection.detail} ({note})" if note else rejection.detail,
        payload=payload,
        message_id=None,
        received_at=received_at,
        source=source,
    )


def _blob_payload(data: bytes, text: bytes | None) -> tuple[str, str]:
    """The blob as text when it is (a prefix of) valid UTF-8, else base64 of the raw bytes."""
    if text is None and data[:2] != GZIP_MAGIC:
        text = data
    if text is not None:
        prefix = text[:BLOB_PAYLOAD_CAP_BYTES]
        decoded = _utf8_prefix(prefix, truncated=len(text) > len(prefix))
        if decoded is not None:
            if len(text) > len(prefix):
                return decoded, f"payload: the first {len(prefix)} bytes of the blob text"
            return decoded, ""
    raw_prefix = data[: BLOB_PAYLOAD_CAP_BYTES * 3 // 4]
    note = "payload: base64 of the raw record"
    if len(data) > len(raw_prefix):
        note += f", its first {len(raw_prefix)} of {len(data)} bytes"
    return base64.b64encode(raw_prefix).decode("ascii"), note


def _utf8_prefix(prefix: bytes, *, truncated: bool) -> str | None:
    # A cut can split one multi-byte character (at most 3 dangling bytes).
    for cut in range(4 if truncated else 1):
        try:
            return prefix[: len(prefix) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


# --- event level ----------------------------------------------------------------------------


class _BlobState:
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

    def __init__(self, blob: _Blob, received_at: datetime, limits: Limits) -> None:
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


def _decode_event_after_error(raw: msgspec.Raw, message: str) -> _WireEvent:
    """Classify a failed typed decode, or recover an ISO 8601 timestamp msgspec refused."""
    path = _error_path(message)
    if path is None:  # an error about the root value: it is not an object
        raise _EventRejected(Reason.EVENT_NOT_OBJECT, message)
    if path not in _TIMESTAMP_PATHS:
        raise _EventRejected(Reason.INVALID_FIELD_TYPE, message)
    return _decode_event_text_times(raw)


def _decode_event_text_times(raw: msgspec.Raw) -> _WireEvent:
    """Retry an event whose timestamp msgspec refused, parsing timestamps with fromisoformat."""
    try:
        text_wire = _EVENT_TEXT_TIMES_DECODER.decode(raw)
    except msgspec.ValidationError as error:
        message = str(error)
        path = _error_path(message)
        reason = Reason.INVALID_TIMESTAMP if path in _TIMESTAMP_PATHS else Reason.INVALID_FIELD_TYPE
        raise _EventRejected(reason, message) from None
    parsed: dict[str, datetime | None] = {}
    for attribute, value in (
        ("timestamp", text_wire.timestamp),
        ("original_timestamp", text_wire.original_timestamp),
        ("sent_at", text_wire.sent_at),
    ):
        try:
            parsed[attribute] = None if value is None else _parse_timestamp_text(value)
        except ValueError:
            wire_name = _WireEventTextTimes.__struct_encode_fields__[
                _WireEventTextTimes.__struct_fields__.index(attribute)
            ]
            raise _EventRejected(
                Reason.INVALID_TIMESTAMP,
                f"not an ISO 8601 timestamp: {_clip(value)!r} - at `$.{wire_name}`",
            ) from None
    return _WireEvent(
        type=text_wire.type,
        event=text_wire.event,
        name=text_wire.name,
        message_id=text_wire.message_id,
        user_id=text_wire.user_id,
        anonymous_id=text_wire.anonymous_id,
        group_id=text_wire.group_id,
        previous_id=text_wire.previous_id,
        properties=text_wire.properties,
        traits=text_wire.traits,
        context=text_wire.context,
        **parsed,
    )


def _event_row(wire: _WireEvent, blob: _BlobState) -> EventRow:
    event_type = wire.type
    if event_type not in EVENT_TYPES:
        raise _EventRejected(
            Reason.INVALID_TYPE,
            f"type {_clip(event_type)!r} is not one of {', '.join(sorted(EVENT_TYPES))}",
        )
    message_id = wire.message_id
    if not message_id:
        raise _EventRejected(Reason.MISSING_MESSAGE_ID, "messageId is missing or empty")
    max_id_chars = blob.max_id_chars
    if len(message_id) > max_id_chars:
        raise _EventRejected(
            Reason.MESSAGE_ID_TOO_LONG,
            f"messageId has {len(message_id)} characters; the limit is {max_id_chars}",
        )
    if not (wire.user_id or wire.anonymous_id):
        raise _EventRejected(
            Reason.MISSING_IDENTITY, "neither userId nor anonymousId is a non-empty string"
        )
    if event_type == "track":
        name = wire.event
        if not name:
            raise _EventRejected(Reason.MISSING_EVENT_NAME, "track event without `event`")
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
            original_timestamp = _as_utc(original_timestamp)
        if sent_at is None:
            sent_at = blob.sent_at
        elif sent_at.tzinfo is not UTC:
            sent_at = _as_utc(sent_at)
        if timestamp is not None:
            if timestamp.tzinfo is not UTC:
                timestamp = _as_utc(timestamp)
        elif original_timestamp is None:
            timestamp = received_at
        elif sent_at is None:
            timestamp = original_timestamp
        else:
            timestamp = received_at - (sent_at - original_timestamp)
    except OverflowError:
        raise _EventRejected(
            Reason.INVALID_TIMESTAMP, "timestamps are out of the representable range"
        ) from None
    if timestamp > blob.latest:
        raise _EventRejected(
            Reason.TIMESTAMP_IN_FUTURE,
            f"timestamp {timestamp.isoformat()} is after {blob.latest.isoformat()} "
            f"(received_at plus the future tolerance)",
        )
    if timestamp < blob.earliest:
        raise _EventRejected(
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
        raise _EventRejected(
            Reason.INVALID_FIELD_TYPE,
            f"Expected `object | null`, got `{_json_kind(first)}` - at `$.{field_name}`",
        )


def _json_kind(first_byte: int) -> str:
    return {ord("["): "array", ord('"'): "str", ord("t"): "bool", ord("f"): "bool"}.get(
        first_byte, "number"
    )


def _event_quarantine(
    raw: msgspec.Raw, index: int, rejection: _EventRejected, received_at: datetime, source: str
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


# --- shared helpers -------------------------------------------------------------------------


def event_quarantine_id(payload: bytes, message_id: str | None, source: str, index: int) -> str:
    """The id of a rejected event's row: what the loader dedupes quarantine rows on.

    With a readable messageId it is the event's content (messageId + a hash of its bytes), so a
    pipeline retry and a client resend in a new Kinesis record, at any position, give the same
    id: one invalid event, one row. A different payload under the same messageId is a different
    rejection and keeps its own row. Without a messageId nothing tells one event sent twice
    from two events, so the id is the record and position: a retried record still gives the
    same id, a resend gives a new row.
    """
    if message_id is None:
        return _short_hash(f"{source}|{index}".encode())
    content = hashlib.sha256(payload).hexdigest()
    return _short_hash(f"event|{message_id}|{content}".encode(errors="surrogatepass"))


def blob_quarantine_id(data: bytes) -> str:
    """The id of a rejected blob's row: its bytes, so a retry or an identical resend is one row."""
    return _short_hash(b"blob|" + hashlib.sha256(data).hexdigest().encode())


def is_blob_rejection(row: QuarantineRow) -> bool:
    """Whether a quarantine row stands for a whole blob (its payload is the blob, not one event).

    Told by the reason, not the id, so it also holds for rows stored before ids were content-based.
    """
    return row.reason in BLOB_REASONS


def _short_hash(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()[:32]


def _error_path(message: str) -> str | None:
    marker = message.rfind(_ERROR_PATH_MARKER)
    if marker < 0:
        return None
    return message[marker + len(_ERROR_PATH_MARKER) : -1]


def _as_utc(value: datetime) -> datetime:
    tzinfo = value.tzinfo
    if tzinfo is UTC:
        return value
    if tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _parse_timestamp_text(text: str) -> datetime:
    """RFC 3339 through msgspec's C parser, other ISO 8601 forms through fromisoformat."""
    try:
        return _DATETIME_DECODER.decode(_ENCODER.encode(text))
    except (msgspec.DecodeError, msgspec.EncodeError):
        return datetime.fromisoformat(text)


def _clip(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
