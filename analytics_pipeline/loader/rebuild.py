"""Rebuilding a lost loader store from the warehouse (a disaster's procedure, never a load's).

The store holds what every load needs to know: which keys and batches are loaded and which
aggregate pairs are counted. If its disk is lost (and no snapshot restores it), the loop refuses
to load (it would insert copies); this reads the same facts back from the warehouse for the
retention and writes them into a new store. On BigQuery it is one scan of the retention's
partitions of a few columns: at 1 billion events a month about 1 billion x ~100 B = ~93 GiB,
~$0.57, once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

from analytics_pipeline.chunking import chunked
from analytics_pipeline.loader import store as keys
from analytics_pipeline.loader.plan import first_seen_keys
from analytics_pipeline.loader.store import LoaderStore
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import Warehouse, open_warehouse

WRITE_CHUNK = 50_000


def rebuild_store(settings: Settings, warehouse: Warehouse | None = None) -> dict[str, int]:
    """Fill the (empty) store of the configured queue from the warehouse; returns counts."""
    warehouse = warehouse or open_warehouse(settings)
    since = datetime.now(UTC) - timedelta(days=settings.loader_retention_days)
    counts = {"event": 0, "quarantine": 0, "batch": 0}
    with LoaderStore.open(
        settings.loader_store_dir, retention_days=settings.loader_retention_days
    ) as store:
        found: list[bytes] = []
        batches: list[str] = []
        for row in warehouse.loaded_since(since, settings.late_arrival_days + 1):
            kind = row[0]
            counts[kind] += 1
            if kind == "batch":
                batches.append(row[1])
            elif kind == "quarantine":
                found.append(keys.digest(keys.QUARANTINE_ID, row[1]))
            else:
                message_id, day, event_type, event, user_id, anonymous_id = row[1:]
                found.append(keys.digest(keys.MESSAGE_ID, message_id))
                day_start = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)
                event_row = SimpleNamespace(
                    timestamp=day_start,
                    user_id=user_id,
                    anonymous_id=anonymous_id,
                    type=event_type,
                    event=event,
                )
                found.extend(first_seen_keys(event_row).values())
        for chunk in chunked(found, WRITE_CHUNK):
            store.add_keys(chunk)
        store.add_keys([], batches)
    return counts
