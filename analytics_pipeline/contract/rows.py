"""The normalised rows the contract produces: one shape for the Lambda, loaders and warehouse.

All timestamps are timezone-aware UTC datetimes; they travel as RFC 3339 strings ending in `Z`
(DuckDB ignores a numeric offset when casting to TIMESTAMP, so rows are always normalised to UTC).
JSON-valued columns travel as raw JSON text (`msgspec.Raw`, JSON `null` when absent) so the
hot path never re-parses properties it does not need to look at.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

NULL_JSON = msgspec.Raw(b"null")

EVENT_TYPES = frozenset({"track", "screen", "page", "identify", "group", "alias"})


class EventRow(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One accepted event as stored in `analytics.events` (less `loaded_at`, set on load)."""

    message_id: str
    type: str
    event: str | None = None  # track: the event name; screen/page: the screen or page name
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    timestamp: datetime  # skew-corrected (or the client's explicit `timestamp`)
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime
    properties: msgspec.Raw = NULL_JSON
    context: msgspec.Raw = NULL_JSON
    traits: msgspec.Raw = NULL_JSON
    batch_id: str | None = None  # set by the Lambda when the row is packed


class QuarantineRow(msgspec.Struct, kw_only=True):
    """One rejected event or blob, as stored in `analytics.events_quarantine`."""

    quarantine_id: str  # from the content: a retry or a client resend yields the same id
    reason: str  # a `Reason` value
    detail: str  # human-readable, e.g. "Expected `str`, got `int` - at `$.userId`"
    payload: str  # the rejected event's JSON text, or the blob (base64 if not valid UTF-8)
    message_id: str | None = None
    received_at: datetime
    source: str  # where it came from, e.g. "kinesis:analytics-events:shardId-000000000000:4960..."
    batch_id: str | None = None


EVENT_COLUMNS = tuple(EventRow.__struct_fields__)
QUARANTINE_COLUMNS = tuple(QuarantineRow.__struct_fields__)
