"""The wire contract: what clients send, what the pipeline keeps, and why it rejects the rest."""

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.parse import DEFAULT_LIMITS, ParseResult, parse_blob, quarantine_id
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rows import EventRow, QuarantineRow

__all__ = [
    "DEFAULT_LIMITS",
    "EventRow",
    "Limits",
    "ParseResult",
    "QuarantineRow",
    "Reason",
    "parse_blob",
    "quarantine_id",
]
