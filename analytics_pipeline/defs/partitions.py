"""Day partitions shared by every event table (UTC days), and where they start.

The start is ANALYTICS_PARTITION_START when set. Unset, it is the UTC day this code location
first started with this state folder, recorded once in `<ANALYTICS_STATE_DIR>/partition-start`
and read back on every later start (so it never moves): a fresh install shows today and
tomorrow, not hundreds of Missing days since some fixed date. Why not "the first day the
warehouse has events": the code location would have to query the warehouse at every import
(BigQuery bills >= 10 MB per query; DuckDB's file lock would delay the import behind a load).
Why not "today minus ANALYTICS_LATE_ARRIVAL_DAYS": thirty Missing days on a fresh install, for
events that can only be late replays. Events older than the start are loaded all the same;
only their materializations are not reported (their days are not partitions).
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from analytics_pipeline.settings import Settings

START_FILE = "partition-start"


def partition_start(settings: Settings) -> str:
    """ANALYTICS_PARTITION_START, or the recorded first start (recorded now if there is none)."""
    if settings.partition_start:
        return settings.partition_start
    path = settings.state_dir / START_FILE
    if not path.exists():
        _record_once(path, datetime.now(UTC).date().isoformat())
    return path.read_text().strip()


def _record_once(path: Path, day: str) -> None:
    """Write `day` unless another process got there first (link: atomic and exclusive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(day + "\n")
    try:
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()


def day_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Today's partition exists (micro-batches land in it as they arrive), and so does tomorrow's.

    `end_offset=2` rather than 1: an event stamped within the future tolerance just after midnight
    UTC belongs to tomorrow, and a batch whose partition does not exist yet could only wait in the
    queue until it reaches the dead-letter queue.
    """
    return dg.DailyPartitionsDefinition(start_date=partition_start(settings), end_offset=2)
