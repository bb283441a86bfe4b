"""Quarantine row ids: what was received, not where, so a resend is the same row."""

from __future__ import annotations

import hashlib

from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rows import QuarantineRow

# The reasons that reject a whole blob (the others reject one event); reason codes are stable.
BLOB_REASONS = frozenset(reason.value for reason in Reason if reason.value.startswith("blob_"))


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
