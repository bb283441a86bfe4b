"""The wire contract: what clients send, what the pipeline keeps, and why it rejects the rest."""

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.parse import DEFAULT_LIMITS, ParseResult, parse_blob
from analytics_pipeline.contract.quarantine_ids import (
    BLOB_REASONS,
    blob_quarantine_id,
    event_quarantine_id,
    is_blob_rejection,
)
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rows import EventRow, QuarantineRow

__all__ = [
    "BLOB_REASONS",
    "DEFAULT_LIMITS",
    "EventRow",
    "Limits",
    "ParseResult",
    "QuarantineRow",
    "Reason",
    "blob_quarantine_id",
    "event_quarantine_id",
    "is_blob_rejection",
    "parse_blob",
]
