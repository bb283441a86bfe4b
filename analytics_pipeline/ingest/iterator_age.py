"""The local trigger's iterator age, as Lambda's `IteratorAge` metric is for an event source
mapping: the trigger writes a small file (`trigger-lag-<stream>.json` in the state folder), the
Dagster health sensor reads it. Here, under ingest, because the trigger (and the core install,
which has no loader extras) imports it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TriggerLag:
    """Per shard, the largest iterator age (ms) the trigger saw since its previous report: the
    age of the newest record of each batch it read, 0 when a read found nothing (caught up) -
    what Lambda's `IteratorAge` metric is for an event source mapping."""

    updated_at: float  # epoch seconds of the report
    shards: dict[str, float] = field(default_factory=dict)

    @property
    def iterator_age_seconds(self) -> float:
        return max(self.shards.values(), default=0.0) / 1000.0


def trigger_lag_path(state_dir: Path, stream_name: str) -> Path:
    return state_dir / f"trigger-lag-{stream_name}.json"


def read_trigger_lag(state_dir: Path, stream_name: str) -> TriggerLag | None:
    """The trigger's last report, or None when no trigger has reported here."""
    try:
        saved = json.loads(trigger_lag_path(state_dir, stream_name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return TriggerLag(float(saved["updated_at"]), dict(saved["shards"]))


class TriggerLagReporter:
    """Kept by the trigger: records what it reads, writes a report at most every
    `every_seconds` (a small file replaced atomically; no fsync: it is a gauge, not a record)."""

    def __init__(self, state_dir: Path, stream_name: str, every_seconds: float = 5.0) -> None:
        self.path = trigger_lag_path(state_dir, stream_name)
        self.every_seconds = every_seconds
        self.pending: dict[str, float] = {}
        self.written_at = 0.0

    def saw(self, shard_id: str, iterator_age_ms: float) -> None:
        self.pending[shard_id] = max(self.pending.get(shard_id, 0.0), iterator_age_ms)
        if time.monotonic() - self.written_at >= self.every_seconds:
            self.write()

    def write(self) -> None:
        self.written_at = time.monotonic()
        report = {"updated_at": time.time(), "shards": self.pending}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(report))
        os.replace(temporary, self.path)
        self.pending = {}
