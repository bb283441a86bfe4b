"""Blob level: one Kinesis record read (size, gzip, UTF-8, JSON, shape, count, depth) or
rejected whole as ONE quarantine row.

The batch is decoded as a list of `msgspec.Raw` spans (events are decoded one by one later, in
`event.py`); gzip is detected by its magic bytes; the decompression cap covers all members.
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass
from datetime import datetime

import msgspec

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.quarantine_ids import blob_quarantine_id
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rejections import BlobRejected, clip
from analytics_pipeline.contract.rows import NULL_JSON, QuarantineRow
from analytics_pipeline.contract.timestamps import as_utc, parse_timestamp_text

GZIP_MAGIC = b"\x1f\x8b"
# A blob-level quarantine row keeps at most this much of the blob: enough to diagnose, not
# enough to turn the quarantine table into a second copy of an attack.
BLOB_PAYLOAD_CAP_BYTES = 65_536
# Blobs with at least this many commas get their batch counted before it is decoded to a list
# (one object per element; at 64k elements that is ~4 MB, at the 8 MiB cap ~240 MB).
PRECOUNT_MIN_COMMAS = 65_536


class _WireBlob(msgspec.Struct, rename="camel", gc=False):
    # context as dict[str, Raw]: validates "object" in C and is exactly what a merge needs.
    batch: list[msgspec.Raw]
    sent_at: str | None = None
    context: dict[str, msgspec.Raw] | None = None


class _WireBlobSpan(msgspec.Struct, gc=False):
    """The batch as one span: lets us count its elements before allocating one per element."""

    batch: msgspec.Raw = NULL_JSON


_BLOB_DECODER = msgspec.json.Decoder(_WireBlob)
_BLOB_SPAN_DECODER = msgspec.json.Decoder(_WireBlobSpan)
_ENCODER = msgspec.json.Encoder()

_BRACKETS_AS_PARENS = bytes.maketrans(b"{[}]", b"(())")  # valid JSON pairs them properly
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'{}[]"')
_NOT_BRACKETS_QUOTES_OR_COMMAS = bytes(b for b in range(256) if b not in b'{}[]",')
_STRING_IN_PROJECTION = re.compile(rb'"[^"]*"')
_INNERMOST_GROUP = re.compile(rb"\([^()]*\)")


@dataclass(slots=True)
class Blob:
    wire: _WireBlob
    sent_at_parsed: datetime | None
    context: dict[str, msgspec.Raw] | None  # None when absent or empty: nothing to merge
    context_json: msgspec.Raw  # the blob context as JSON, for events without their own


def decode_blob(data: bytes, limits: Limits) -> Blob:
    if len(data) > limits.max_blob_bytes:
        raise BlobRejected(
            Reason.BLOB_TOO_LARGE,
            f"blob is {len(data)} bytes; the limit is {limits.max_blob_bytes}",
        )
    text = gunzip(data, limits.max_decompressed_bytes) if data[:2] == GZIP_MAGIC else data
    # msgspec does not validate UTF-8 inside spans it keeps as Raw, so check it here;
    # isascii() is a word-at-a-time scan, the decode only runs for non-ASCII blobs.
    if not text.isascii():
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BlobRejected(Reason.BLOB_INVALID_UTF8, f"blob is not UTF-8: {error}") from None
    # Fewer commas: too few elements for the list decode below to cost much memory, and the
    # count after it is exact. Checked with the span first only above that (attack-sized).
    precount_at = max(limits.max_events_per_blob, PRECOUNT_MIN_COMMAS)
    if len(text) > precount_at and text.count(b",") >= precount_at:
        events = _batch_length_if_over(text, limits.max_events_per_blob, limits.max_nesting_depth)
        if events is not None:
            raise BlobRejected(
                Reason.BLOB_TOO_MANY_EVENTS,
                f"blob has {events} events; the limit is {limits.max_events_per_blob}",
                text,
            )
    try:
        wire = _BLOB_DECODER.decode(text)
    except msgspec.ValidationError as error:
        raise BlobRejected(Reason.BLOB_INVALID_SHAPE, str(error), text) from None
    except msgspec.DecodeError as error:
        raise BlobRejected(Reason.BLOB_NOT_JSON, str(error), text) from None
    except RecursionError:
        raise BlobRejected(
            Reason.BLOB_NESTING_TOO_DEEP, "blob nests deeper than the decoder can follow", text
        ) from None
    if len(wire.batch) > limits.max_events_per_blob:
        raise BlobRejected(
            Reason.BLOB_TOO_MANY_EVENTS,
            f"blob has {len(wire.batch)} events; the limit is {limits.max_events_per_blob}",
            text,
        )
    context_json = _ENCODER.encode(wire.context) if wire.context else b"null"
    if _nesting_depth_exceeds(text, limits.max_nesting_depth):
        raise BlobRejected(
            Reason.BLOB_NESTING_TOO_DEEP,
            f"blob nests deeper than {limits.max_nesting_depth} levels",
            text,
        )
    sent_at = None
    if wire.sent_at is not None:
        try:
            sent_at = as_utc(parse_timestamp_text(wire.sent_at))
        except (ValueError, OverflowError):
            raise BlobRejected(
                Reason.BLOB_INVALID_SHAPE,
                f"blob sentAt is not an ISO 8601 timestamp: {clip(wire.sent_at)!r}",
                text,
            ) from None
    return Blob(
        wire=wire,
        sent_at_parsed=sent_at,
        context=wire.context or None,
        context_json=msgspec.Raw(context_json),
    )


def gunzip(data: bytes, cap: int) -> bytes:
    """Decompress every gzip member, never producing more than `cap` + 1 bytes in total.

    The blob rules for gzip, for every reader of client bytes (the Lambda, and the HTTP
    collector's request bodies); a refusal is a `BlobRejected` with its reason."""
    parts: list[bytes] = []
    total = 0
    remaining = data
    while True:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            chunk = decompressor.decompress(remaining, cap + 1 - total)
        except zlib.error as error:
            raise BlobRejected(Reason.BLOB_GZIP_INVALID, f"gzip is corrupt: {error}") from None
        total += len(chunk)
        parts.append(chunk)
        if total > cap:
            raise BlobRejected(
                Reason.BLOB_DECOMPRESSED_TOO_LARGE,
                f"blob decompresses to more than {cap} bytes",
                b"".join(parts)[: BLOB_PAYLOAD_CAP_BYTES + 1],  # +1: "it was cut"
            )
        if not decompressor.eof:
            raise BlobRejected(Reason.BLOB_GZIP_INVALID, "gzip is truncated")
        remaining = decompressor.unused_data
        if not remaining:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if remaining[:2] != GZIP_MAGIC:
            raise BlobRejected(Reason.BLOB_GZIP_INVALID, "bytes after the end of the gzip data")


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


def blob_quarantine(
    data: bytes, rejection: BlobRejected, received_at: datetime, source: str
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
