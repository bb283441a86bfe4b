"""Input limits the contract enforces; each violation has its own `Reason`."""

from __future__ import annotations

from dataclasses import dataclass

from analytics_pipeline.settings import Settings


@dataclass(frozen=True)
class Limits:
    max_blob_bytes: int = 1_048_576
    max_decompressed_bytes: int = 8_388_608
    max_events_per_blob: int = 2_500
    max_event_bytes: int = 32_768
    max_nesting_depth: int = 64
    max_message_id_chars: int = 100
    late_arrival_days: int = 30
    future_tolerance_seconds: int = 600

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_blob_bytes=settings.max_blob_bytes,
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_events_per_blob=settings.max_events_per_blob,
            max_event_bytes=settings.max_event_bytes,
            max_nesting_depth=settings.max_nesting_depth,
            late_arrival_days=settings.late_arrival_days,
            future_tolerance_seconds=settings.future_tolerance_seconds,
        )
