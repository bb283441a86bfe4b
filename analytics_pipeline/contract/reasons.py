"""Machine-readable reason codes for everything the pipeline rejects.

The string values are stable: they are stored in `events_quarantine.reason`, used by replay
filters and documented in the README. Add codes; never rename or reuse one.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # The whole blob is rejected: nothing in it could be read as events.
    BLOB_TOO_LARGE = "blob_too_large"
    BLOB_DECOMPRESSED_TOO_LARGE = "blob_decompressed_too_large"
    BLOB_GZIP_INVALID = "blob_gzip_invalid"
    BLOB_INVALID_UTF8 = "blob_invalid_utf8"
    BLOB_NOT_JSON = "blob_not_json"
    BLOB_NESTING_TOO_DEEP = "blob_nesting_too_deep"
    BLOB_INVALID_SHAPE = "blob_invalid_shape"
    BLOB_TOO_MANY_EVENTS = "blob_too_many_events"
    # One event is rejected; its siblings in the blob go on.
    EVENT_NOT_OBJECT = "event_not_object"
    EVENT_TOO_LARGE = "event_too_large"
    INVALID_TYPE = "invalid_type"
    MISSING_MESSAGE_ID = "missing_message_id"
    MESSAGE_ID_TOO_LONG = "message_id_too_long"
    MISSING_IDENTITY = "missing_identity"
    MISSING_EVENT_NAME = "missing_event_name"
    INVALID_FIELD_TYPE = "invalid_field_type"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
