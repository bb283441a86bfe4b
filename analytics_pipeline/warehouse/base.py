"""The one interface every warehouse implements; Dagster assets and the CLI only see this.

A load is planned by the loader (`loader/plan.py`: ledger, first copies, the key index, the
aggregate deltas, all answered by the loader's store, never by a warehouse query) and handed to
the warehouse as a `LoadPlan`. The warehouse makes it visible at once or not at all:
`prepare` writes what can be written before (BigQuery: finalized PENDING streams) and returns
what `commit` and `recover` need, which the loader keeps in its store's intent; `commit` makes
every row of the load visible together (idempotent); `recover`, after a crash, finishes a load
that can still be finished and says whether it is in the warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from statistics import median, quantiles
from typing import Any, Protocol

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.contract.rows import EventRow, QuarantineRow


class TransientWarehouseError(RuntimeError):
    """An error that says nothing about the batches (warehouse locked, unreachable, a conflict
    with a concurrent transaction): the loader retries instead of isolating batches. Every
    warehouse raises it (or a subclass) for such errors, chained to the cause."""


@dataclass(frozen=True)
class StagedBatch:
    """A batch whose body has been fetched: gzip NDJSON rows of one kind and one day."""

    batch_id: str
    kind: BatchKind
    day: str
    row_count: int  # what the Lambda said the batch holds (message attribute)
    ndjson_gz: bytes


@dataclass
class LoadResult:
    batches: int = 0
    batches_already_loaded: int = 0
    rows_received: int = 0  # rows in the batches that were not already loaded
    rows_inserted: int = 0
    duplicates_skipped: int = 0  # rows whose id was already in the table or repeated in the load
    rows_declared: int = 0  # sum of row_count over the batches that were not already loaded
    seconds_from_sent_at_p50: float | None = None
    seconds_from_sent_at_p95: float | None = None
    seconds_from_sent_at_max: float | None = None
    loaded_batch_ids: list[str] = field(default_factory=list)
    failed_batch_ids: list[str] = field(default_factory=list)  # left in SQS: redelivered / DLQ

    @property
    def reconciles(self) -> bool:
        """Every row the Lambda declared was either inserted or recognised as a duplicate."""
        return (
            self.rows_declared == self.rows_received == self.rows_inserted + self.duplicates_skipped
        )

    def add(self, other: LoadResult) -> None:
        """Count `other` in (latencies: the worse of the two)."""
        for name in (
            "batches",
            "batches_already_loaded",
            "rows_received",
            "rows_inserted",
            "duplicates_skipped",
            "rows_declared",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in (
            "seconds_from_sent_at_p50",
            "seconds_from_sent_at_p95",
            "seconds_from_sent_at_max",
        ):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None and (mine is None or theirs > mine):
                setattr(self, name, theirs)
        self.loaded_batch_ids += other.loaded_batch_ids
        self.failed_batch_ids += other.failed_batch_ids


@dataclass
class BatchOutcome:
    """One batch of the load, for the ledger and the reconciliation."""

    batch_id: str
    kind: BatchKind
    day: str
    rows_declared: int  # what the Lambda said (message attribute)
    rows_received: int = 0  # what the body holds
    rows_inserted: int = 0  # first copies not already in the table

    @property
    def duplicates_skipped(self) -> int:
        return self.rows_received - self.rows_inserted


@dataclass(frozen=True)
class EventCountDelta:
    day: date
    type: str
    event: str | None
    events: int
    users: int


@dataclass(frozen=True)
class ActiveUsersDelta:
    day: date
    active_users: int
    identified_users: int
    anonymous_users: int


@dataclass
class LoadPlan:
    load_id: str
    events: list[EventRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    batches: list[BatchOutcome] = field(default_factory=list)  # to load (not in the ledger)
    already_loaded: list[str] = field(default_factory=list)  # batch ids the ledger has
    failed: dict[str, BaseException] = field(default_factory=dict)  # unreadable (the loader counts)
    kinds: dict[str, BatchKind] = field(default_factory=dict)  # every distinct batch id
    event_counts: list[EventCountDelta] = field(default_factory=list)
    active_users: list[ActiveUsersDelta] = field(default_factory=list)
    new_keys: list[bytes] = field(default_factory=list)  # what the store holds after commit
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def writes_anything(self) -> bool:
        """Batches to record in the ledger (even when every row was a duplicate)."""
        return bool(self.batches)

    def days(self, kind: BatchKind) -> list[str]:
        return sorted({b.day for b in self.batches if b.kind is kind})

    def results(self) -> dict[BatchKind, LoadResult]:
        """Per kind: what the load did, in the shape the assets report."""
        results: dict[BatchKind, LoadResult] = {kind: LoadResult() for kind in self.kinds.values()}
        for batch_id in self.already_loaded:
            results[self.kinds[batch_id]].batches += 1
            results[self.kinds[batch_id]].batches_already_loaded += 1
        for outcome in self.batches:
            _count(results[outcome.kind], outcome)
        if BatchKind.EVENTS in results:
            _set_latencies(results[BatchKind.EVENTS], self.events, self.loaded_at)
        return results

    def results_by_day(self) -> dict[tuple[BatchKind, str], LoadResult]:
        """Per kind and day partition the load wrote to (batches are per kind and day): what
        one materialization of that partition reports."""
        results: dict[tuple[BatchKind, str], LoadResult] = {}
        for outcome in self.batches:
            _count(results.setdefault((outcome.kind, outcome.day), LoadResult()), outcome)
        by_day: dict[str, list[EventRow]] = {}
        for row in self.events:
            by_day.setdefault(row.timestamp.astimezone(UTC).date().isoformat(), []).append(row)
        for (kind, day), result in results.items():
            if kind is BatchKind.EVENTS:
                _set_latencies(result, by_day.get(day, []), self.loaded_at)
        return results


def _count(result: LoadResult, outcome: BatchOutcome) -> None:
    result.batches += 1
    result.rows_declared += outcome.rows_declared
    result.rows_received += outcome.rows_received
    result.rows_inserted += outcome.rows_inserted
    result.duplicates_skipped += outcome.duplicates_skipped
    result.loaded_batch_ids.append(outcome.batch_id)


def _set_latencies(result: LoadResult, rows: Sequence[EventRow], loaded_at: datetime) -> None:
    """Seconds from the client's `sentAt` to this load, over the rows it inserted."""
    latencies = [(loaded_at - row.sent_at).total_seconds() for row in rows if row.sent_at]
    if latencies:
        result.seconds_from_sent_at_p50 = median(latencies)
        result.seconds_from_sent_at_p95 = (
            quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
        )
        result.seconds_from_sent_at_max = max(latencies)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class Warehouse(Protocol):
    def ensure_schema(self) -> None:
        """Create the schema and every table when missing (idempotent, cheap to call often)."""

    def loaded_batch_ids(self, batch_ids: Sequence[str]) -> set[str]:
        """The subset of `batch_ids` in the warehouse's own ledger table (for operators; the
        loader asks its store)."""

    def prepare(self, plan: LoadPlan) -> dict[str, Any]:
        """Write what can be written before the commit, invisibly; returns what `commit` and
        `recover` need (JSON-able: the loader keeps it in the store's intent)."""

    def commit(self, plan: LoadPlan, prepared: dict[str, Any]) -> None:
        """Make every row of the load visible together: events, quarantine, the aggregate
        deltas and the ledger rows. Idempotent."""

    def recover(self, load_id: str, prepared: dict[str, Any]) -> bool:
        """After a crash between `prepare` and the loader's record of the commit: finish the
        load if it can still be finished. True: the load is in the warehouse (now or before);
        False: it is not and never will be (its batches must be loaded again)."""

    def loaded_since(self, since: datetime, event_days: int) -> Iterator[tuple[str, ...]]:
        """What was loaded since `since`, for rebuilding a lost loader store: ("event",
        message_id, day, type, event, user_id, anonymous_id), ("quarantine", quarantine_id) and
        ("batch", batch_id). Events are looked for in the `event_days` days before `since`
        too (their timestamps can be that much older than their load)."""

    def refresh_daily_event_counts(self, day: date) -> int:
        """Set the day of `daily_event_counts` to what the day's events say (the loads keep it
        current incrementally; this is the repair and the backfill); returns the day's rows."""

    def refresh_daily_active_users(self, day: date) -> int:
        """The same for `daily_active_users`."""

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
