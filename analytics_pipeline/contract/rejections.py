"""How the contract says no: the two rejections and the text of their details."""

from __future__ import annotations

from analytics_pipeline.contract.reasons import Reason

_ERROR_PATH_MARKER = " - at `"


class BlobRejected(Exception):
    """The whole blob cannot be read: one quarantine row stands for it."""

    def __init__(self, reason: Reason, detail: str, text: bytes | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.text = text  # the decoded blob text when we have it, for the payload


class EventRejected(Exception):
    """One event is rejected; its siblings are judged on their own."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def error_path(message: str) -> str | None:
    """The JSON path msgspec names at the end of a validation error (`$.userId`), if any."""
    marker = message.rfind(_ERROR_PATH_MARKER)
    if marker < 0:
        return None
    return message[marker + len(_ERROR_PATH_MARKER) : -1]


def clip(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."
