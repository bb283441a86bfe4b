"""The wire contract: one client blob (a Kinesis record) in, normalised rows out.

`parse_blob` here ties the levels together: `blob.py` reads or rejects the whole record,
`event.py` judges each event, `quarantine_ids.py` names rejected rows, `timestamps.py` and
`rejections.py` hold what both levels share.

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

from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from analytics_pipeline.contract.blob import BlobRejected, blob_quarantine, decode_blob
from analytics_pipeline.contract.event import (
    EVENT_DECODER,
    BlobState,
    decode_event_after_error,
    event_quarantine,
    event_row,
)
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rejections import EventRejected
from analytics_pipeline.contract.rows import EventRow, QuarantineRow
from analytics_pipeline.contract.timestamps import as_utc

DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class ParseResult:
    accepted: list[EventRow] = field(default_factory=list)
    rejected: list[QuarantineRow] = field(default_factory=list)


def parse_blob(
    data: bytes, *, received_at: datetime, source: str, limits: Limits = DEFAULT_LIMITS
) -> ParseResult:
    """Turn one client blob into accepted rows and quarantine rows; never raises."""
    received_at = as_utc(received_at)
    try:
        blob = decode_blob(data, limits)
    except BlobRejected as rejection:
        return ParseResult(rejected=[blob_quarantine(data, rejection, received_at, source)])

    result = ParseResult()
    accept = result.accepted.append
    reject = result.rejected.append
    state = BlobState(blob, received_at, limits)
    decode = EVENT_DECODER.decode
    max_event_bytes = limits.max_event_bytes
    for index, raw in enumerate(blob.wire.batch):
        try:
            if len(raw) > max_event_bytes:
                raise EventRejected(
                    Reason.EVENT_TOO_LARGE,
                    f"event is {len(raw)} bytes; the limit is {max_event_bytes}",
                )
            try:
                wire = decode(raw)
            except msgspec.ValidationError as error:
                wire = decode_event_after_error(raw, str(error))
            accept(event_row(wire, state))
        except EventRejected as rejection:
            reject(event_quarantine(raw, index, rejection, received_at, source))
    return result
