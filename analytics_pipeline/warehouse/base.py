"""The one interface every warehouse implements; Dagster assets and the CLI only see this.

Loads are idempotent twice over: a batch id already in the `loaded_batches` ledger is skipped
whole, and a messageId already in `events` (within the dedupe window) is never inserted again.
The ledger rows and the event rows commit in one transaction, so a crash between the commit and
the SQS delete only causes a redelivery that the ledger then skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.contract.rows import QuarantineRow


class TransientWarehouseError(RuntimeError):
    """An error that says nothing about the batches (warehouse locked, unreachable, a conflict
    with a concurrent transaction): the loader retries the whole run instead of isolating
    batches. Every warehouse raises it (or a subclass) for such errors, chained to the cause."""


@dataclass(frozen=True)
class StagedBatch:
    """A batch whose body has been fetched: gzip NDJSON rows of one kind and one day."""

    batch_id: str
    kind: BatchKind
    day: str
    row_count: int  # what the Lambda said the batch holds (message attribute)
    ndjson_gz: bytes


def distinct_batches(
    batches: Sequence[StagedBatch],
) -> tuple[dict[str, StagedBatch], BatchKind | None]:
    """The batches of one load, one per id (ids derive from content), and their one kind.

    Every warehouse's `load_batches` starts here, so the rules are the same everywhere: a batch
    id repeated within the call is one batch, and a call never mixes events and quarantine.
    """
    distinct: dict[str, StagedBatch] = {}
    for batch in batches:
        distinct.setdefault(batch.batch_id, batch)
    kinds = {BatchKind(batch.kind) for batch in distinct.values()}
    if len(kinds) > 1:
        raise ValueError(f"load_batches takes batches of one kind, got {sorted(kinds)}")
    return distinct, (kinds.pop() if kinds else None)


@dataclass
class LoadResult:
    batches: int = 0
    batches_already_loaded: int = 0
    rows_received: int = 0  # rows in the batches that were not already loaded
    rows_inserted: int = 0
    duplicates_skipped: int = 0  # rows whose id was already in the table or repeated in the load
    rows_declared: int = 0  # sum of row_count over the batches that were not already loaded
    seconds_from_sent_at_p50: float | None = None
    seconds_from_sent_at_max: float | None = None
    loaded_batch_ids: list[str] = field(default_factory=list)
    failed_batch_ids: list[str] = field(default_factory=list)  # left in SQS: redelivered / DLQ

    @property
    def reconciles(self) -> bool:
        """Every row the Lambda declared was either inserted or recognised as a duplicate."""
        return (
            self.rows_declared == self.rows_received == self.rows_inserted + self.duplicates_skipped
        )


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class Warehouse(Protocol):
    def ensure_schema(self) -> None:
        """Create the schema and every table when missing (idempotent, cheap to call often)."""

    def loaded_batch_ids(self, batch_ids: Sequence[str]) -> set[str]:
        """The subset of `batch_ids` already in the ledger."""

    def load_batches(self, batches: Sequence[StagedBatch], dedupe_window_days: int) -> LoadResult:
        """Load event or quarantine batches (all of one kind) exactly once, in one transaction."""

    def refresh_daily_event_counts(self, day: date) -> int:
        """Recompute one day of `daily_event_counts` from `events`; returns rows written."""

    def refresh_daily_active_users(self, day: date) -> int:
        """Recompute one day of `daily_active_users` from `events`; returns rows written."""

    def duplicate_message_ids(self, day: date, limit: int = 10) -> list[str]:
        """messageIds that occur more than once among the day's events (should be none)."""

    def query(self, sql: str, parameters: Sequence[Any] | None = None) -> QueryResult:
        """Run SQL for a user (CLI `query`); waits politely for a busy warehouse."""

    def quarantined(self, reason: str, limit: int | None = None) -> list[QuarantineRow]:
        """Quarantine rows with `reason` whose `replayed_at` is unset, oldest first (replay)."""

    def mark_quarantine_replayed(self, quarantine_ids: Sequence[str]) -> int:
        """Set `replayed_at` where unset; returns rows changed (a second replay finds none)."""

    def table_row_counts(self) -> dict[str, int]:
        """Rows per table in the schema, for `status`."""

    def last_loads(self, limit: int = 5) -> QueryResult:
        """The latest ledger entries, for `status`."""
