"""One HTTP request body in, one Kinesis record (a blob of the existing contract) out.

The Segment HTTP Tracking API has two shapes of body:

- `/v1/batch` (analytics.js: `/v1/b`): `{"batch": [events], "sentAt", "context", "writeKey"}`;
- `/v1/track`, `/identify`, `/page`, `/screen`, `/group`, `/alias` (analytics.js: `/v1/t`,
  `/i`, `/p`, `/s`, `/g`, `/a`): one event; the route gives its `type`.

Both become `{"sentAt", "context", "batch": [...]}`, the blob the Lambda already reads: the events
are copied byte for byte (their `messageId`, `context.library` and timestamps untouched), the
request's `sentAt` becomes the blob's (the Lambda's skew correction needs the time of the send
attempt, which the SDK stamps), and the blob context is the request's plus `source`, which the
Lambda merges into every event (`context.source = {"name", "write_key_id"}`).

Only what makes a request unusable as a whole is refused here, with a 400 whose `code` tells the
SDK not to retry: not gzip it claims to be, not UTF-8, not JSON (or too deep for the decoder),
the wrong shape, over 500 KB, over 2,500 events, or an event over 32 KB. The rest is the
Lambda's to judge and quarantine, as before: single events (types, ids, timestamps), and the
contract's nesting limit (checking it here cost 11 % of the collector's CPU; a blob over it is
quarantined whole with `blob_nesting_too_deep`).
"""

from __future__ import annotations

import msgspec

from analytics_pipeline.collector.auth import Source
from analytics_pipeline.contract.blob import GZIP_MAGIC, gunzip
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rejections import BlobRejected

# Segment's limit on one request (decompressed JSON), which its SDKs batch under; it also keeps
# every blob below Kinesis's 1 MiB record. 2,500 events and 32 KB per event are the contract's
# `Limits.max_events_per_blob` and `max_event_bytes`, the same numbers as Segment's.
MAX_REQUEST_BYTES = 500 * 1024

EVENT_TYPE_BY_ROUTE = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
BATCH_ROUTES = frozenset({"batch", "b"})

# Event spans holding either key are decoded and rewritten; all others are copied as they came.
# `writeKey`: analytics.js puts it in every event, and a quarantined payload must not keep it.
# `source`: an event's own `context.source` would win the Lambda's merge, so it is replaced.
_WRITE_KEY_MARKER = b'"writeKey"'
_SOURCE_MARKER = b'"source"'


class RequestRejected(Exception):
    """A request the collector answers with an error; `code` is what the SDKs read."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _BatchBody(msgspec.Struct, rename={"sent_at": "sentAt", "write_key": "writeKey"}):
    batch: list[msgspec.Raw] | None = None
    sent_at: str | None = None
    context: dict[str, msgspec.Raw] | None = None
    write_key: str | None = None


_BATCH_DECODER = msgspec.json.Decoder(_BatchBody)
_OBJECT_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STRING_DECODER = msgspec.json.Decoder(str)
_ENCODER = msgspec.json.Encoder()


class Payload:
    """A decoded request: its write key (if the body names one) and what goes into the blob."""

    __slots__ = ("context", "events", "sent_at", "write_key")

    def __init__(
        self,
        write_key: str | None,
        events: list[msgspec.Raw | bytes],
        sent_at: str | None,
        context: dict[str, msgspec.Raw] | None,
    ) -> None:
        self.write_key = write_key
        self.events = events
        self.sent_at = sent_at
        self.context = context

    def blob(self, source: Source) -> bytes:
        """The Kinesis record data (uncompressed): the contract's blob with `context.source`."""
        context = dict(self.context) if self.context else {}
        context["source"] = msgspec.Raw(source.context_json)
        parts = [b'{"context":', _ENCODER.encode(context)]
        if self.sent_at is not None:
            parts += (b',"sentAt":', _ENCODER.encode(self.sent_at))
        parts += (b',"batch":[', b",".join(self.events), b"]}")
        return b"".join(parts)


def request_text(body: bytes, content_encoding: str | None, limits: Limits) -> bytes:
    """The body as JSON bytes: gunzipped (by header or magic bytes), within the size limits."""
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise RequestRejected(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r}: only gzip is accepted"
        )
    if encoding in ("gzip", "x-gzip") or body[:2] == GZIP_MAGIC:
        if body[:2] != GZIP_MAGIC:
            raise RequestRejected(400, "invalid_gzip", "Content-Encoding is gzip; the body is not")
        try:
            body = gunzip(body, min(MAX_REQUEST_BYTES, limits.max_decompressed_bytes))
        except BlobRejected as rejection:
            if rejection.reason is Reason.BLOB_DECOMPRESSED_TOO_LARGE:
                raise _too_large("decompressed body") from None
            raise RequestRejected(400, "invalid_gzip", str(rejection)) from None
    if len(body) > MAX_REQUEST_BYTES:
        raise _too_large("body")
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestRejected(400, "invalid_json", f"body is not UTF-8: {error}") from None
    return body


def decode_request(text: bytes, route: str, limits: Limits) -> Payload:
    """Decode a `/v1/<route>` body (batch or one event) into what its blob needs."""
    try:
        if route in BATCH_ROUTES:
            payload = _decode_batch(text, limits)
        else:
            payload = _decode_single(text, EVENT_TYPE_BY_ROUTE[route], limits)
    except msgspec.ValidationError as error:
        raise RequestRejected(400, "invalid_request", str(error)) from None
    except msgspec.DecodeError as error:
        raise RequestRejected(400, "invalid_json", str(error)) from None
    except RecursionError:  # far deeper than any limit: nothing to pass on to the Lambda
        raise RequestRejected(400, "nesting_too_deep", "the JSON nests too deep to read") from None
    return payload


def _decode_batch(text: bytes, limits: Limits) -> Payload:
    body = _BATCH_DECODER.decode(text)
    if body.batch is None:
        raise RequestRejected(400, "invalid_request", "the body has no `batch` list")
    if len(body.batch) > limits.max_events_per_blob:
        raise RequestRejected(
            400,
            "too_many_events",
            f"the batch has {len(body.batch)} events; the limit is {limits.max_events_per_blob}",
        )
    # Most bodies name the key once at the top level and no event holds either marker: then
    # no event is looked at (a count of the whole body costs far less than a scan per event).
    markers = [
        marker
        for marker, top_level in (
            (_WRITE_KEY_MARKER, body.write_key is not None),
            (_SOURCE_MARKER, bool(body.context) and "source" in body.context),
        )
        if text.count(marker) > top_level
    ]
    events: list[msgspec.Raw | bytes] = []
    for index, raw in enumerate(body.batch):
        _check_event_size(len(raw), limits, index)
        if markers and any(marker in bytes(raw) for marker in markers):
            events.append(_rewrite_batch_event(raw))
        else:
            events.append(raw)
    return Payload(body.write_key, events, body.sent_at, body.context)


def _decode_single(text: bytes, event_type: str, limits: Limits) -> Payload:
    fields = _OBJECT_DECODER.decode(text)
    write_key = _pop_write_key(fields)
    fields["type"] = msgspec.Raw(_ENCODER.encode(event_type))
    _drop_context_source(fields)
    event = _ENCODER.encode(fields)
    _check_event_size(len(event), limits, None)
    return Payload(write_key, [event], None, None)


def _rewrite_batch_event(raw: msgspec.Raw) -> msgspec.Raw | bytes:
    try:
        fields = _OBJECT_DECODER.decode(raw)
    except msgspec.ValidationError:
        return raw  # not an object: the Lambda quarantines it as `event_not_object`
    had_key = "writeKey" in fields
    _pop_write_key(fields)
    if not (_drop_context_source(fields) or had_key):
        return raw  # a `"source"` elsewhere (e.g. context.campaign.source): kept as sent
    return _ENCODER.encode(fields)


def _pop_write_key(fields: dict[str, msgspec.Raw]) -> str | None:
    raw = fields.pop("writeKey", None)
    if raw is None:
        return None
    try:
        return _STRING_DECODER.decode(raw) or None
    except msgspec.ValidationError:
        return None


def _drop_context_source(fields: dict[str, msgspec.Raw]) -> bool:
    """Remove an event's own `context.source`, so the blob's (the write key's) is the one kept;
    whether there was one."""
    context = fields.get("context")
    if context is None or _SOURCE_MARKER not in bytes(context):
        return False
    try:
        members = _OBJECT_DECODER.decode(context)
    except msgspec.ValidationError:
        return False  # not an object: the Lambda quarantines the event (`invalid_field_type`)
    if members.pop("source", None) is None:
        return False
    fields["context"] = msgspec.Raw(_ENCODER.encode(members))
    return True


def _check_event_size(size: int, limits: Limits, index: int | None) -> None:
    if size > limits.max_event_bytes:
        where = "the event" if index is None else f"event {index} of the batch"
        raise RequestRejected(
            400,
            "event_too_large",
            f"{where} is {size} bytes; the limit is {limits.max_event_bytes}",
        )


def _too_large(what: str) -> RequestRejected:
    return RequestRejected(
        400, "batch_too_large", f"the {what} is over the limit of {MAX_REQUEST_BYTES} bytes"
    )
