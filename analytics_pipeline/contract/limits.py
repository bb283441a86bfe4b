"""Input limits the contract enforces; each violation has its own `Reason`."""

from __future__ import annotations

from dataclasses import dataclass, fields

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
        """Every limit that is a setting (same name) from `settings`; the rest keep defaults."""
        return cls(
            **{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        )
