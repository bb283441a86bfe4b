"""One load, exactly once: receive -> plan -> intent -> commit -> record -> delete, in that order.

1. Bodies are fetched (inline, or the S3 object of an oversize batch) and decoded.
2. The plan (`plan.py`) asks the store only: batches in the ledger are skipped, the first copy
   of each key within the load wins, keys already loaded are dropped, aggregate deltas follow.
3. `warehouse.prepare` writes what it can invisibly (BigQuery: finalized PENDING streams).
4. The store records the intent (keys, batches, what the warehouse needs to finish) - fsync.
5. `warehouse.commit` makes the whole load visible at once.
6. The store records the load (keys and batches in, intent gone) in one atomic write.
7. Only then the SQS messages (and oversize objects) are deleted.

A crash before 4 leaves nothing visible (BigQuery drops uncommitted streams) and SQS redelivers.
A crash between 4 and 6 leaves an intent: before anything else, the next loader `recover`s it
(the warehouse finishes the commit if it can, or says it never happened) and records it, so the
redelivered batches find their keys and ledger entries. A crash after 6 only redelivers batches
the ledger skips. Every path is at least once; the store turns it into exactly once.

A batch that cannot be loaded (a corrupt body, rows the warehouse refuses) must not take its
load's other batches with it: when a commit fails for a reason that is not transient, each
batch is loaded on its own. Failed batches are recorded (`failures.record_failure`, read by
`dlq list`) and NOT deleted: SQS redelivers them and after `ANALYTICS_QUEUE_MAX_RECEIVES`
receives moves them to the dead-letter queue. Transient errors (warehouse locked or unreachable,
AWS throttling) are raised at once: the caller retries, nothing is isolated.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader.batch_queue import BatchQueue, ReceivedMessage
from analytics_pipeline.loader.failures import record_failure
from analytics_pipeline.loader.plan import plan_load
from analytics_pipeline.loader.store import Intent, LoaderStore
from analytics_pipeline.warehouse.base import (
    LoadPlan,
    LoadResult,
    StagedBatch,
    TransientWarehouseError,
    Warehouse,
)

log = logging.getLogger(__name__)


@dataclass
class LoadOutcome:
    """What one load did: per kind, and per kind and day (one materialization per partition)."""

    results: dict[BatchKind, LoadResult] = field(default_factory=dict)
    days: dict[BatchKind, set[str]] = field(default_factory=dict)  # days whose rows changed
    by_day: dict[tuple[BatchKind, str], LoadResult] = field(default_factory=dict)
    aggregate_days: set[str] = field(default_factory=set)  # days whose aggregates changed
    messages: int = 0
    bytes: int = 0  # compressed batch bytes loaded
    bytes_by_day: Counter[tuple[BatchKind, str]] = field(default_factory=Counter)
    rejected_by_reason: Counter[str] = field(default_factory=Counter)  # new quarantine rows
    seconds: float = 0.0
    failures: dict[str, BaseException] = field(default_factory=dict)  # batch id -> why
    write_streams: int = 0  # BigQuery write streams created (a quota: see loop.py)
    load_ids: list[str] = field(default_factory=list)  # the committed loads (store reports)
    recovered: bool = False  # committed by a loader that stopped before reporting it

    @classmethod
    def of_plan(cls, plan: LoadPlan) -> LoadOutcome:
        """What one committed plan did (before the bytes, messages and time of its load)."""
        outcome = cls(load_ids=[plan.load_id] if plan.writes_anything else [])
        outcome.add_plan(plan)
        return outcome

    def to_report(self) -> dict[str, Any]:
        """The outcome as JSON, for the store to keep until it is reported."""
        return {
            "load_ids": self.load_ids,
            "results": {kind.value: asdict(result) for kind, result in self.results.items()},
            "by_day": [[k.value, day, asdict(r)] for (k, day), r in self.by_day.items()],
            "days": {kind.value: sorted(days) for kind, days in self.days.items()},
            "aggregate_days": sorted(self.aggregate_days),
            "rejected_by_reason": dict(self.rejected_by_reason),
        }

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> LoadOutcome:
        """A load a stopped loader committed and never reported (no bytes, time or messages)."""
        return cls(
            results={BatchKind(k): LoadResult(**r) for k, r in report["results"].items()},
            by_day={(BatchKind(k), day): LoadResult(**r) for k, day, r in report["by_day"]},
            days={BatchKind(kind): set(days) for kind, days in report["days"].items()},
            aggregate_days=set(report["aggregate_days"]),
            rejected_by_reason=Counter(report["rejected_by_reason"]),
            load_ids=report["load_ids"],
            recovered=True,
        )

    def result(self, kind: BatchKind) -> LoadResult:
        return self.results.get(kind, LoadResult())

    def day_result(self, kind: BatchKind, day: str) -> LoadResult:
        return self.by_day.get((kind, day), LoadResult())

    def add_plan(self, plan: LoadPlan) -> None:
        for kind, part in plan.results().items():
            self.results.setdefault(kind, LoadResult()).add(part)
        for key, part in plan.results_by_day().items():
            self.by_day.setdefault(key, LoadResult()).add(part)
        for batch in plan.batches:
            self.days.setdefault(batch.kind, set()).add(batch.day)
        self.aggregate_days |= {delta.day.isoformat() for delta in plan.event_counts}
        self.rejected_by_reason.update(row.reason for row in plan.quarantine)

    def add(self, other: LoadOutcome) -> None:
        for kind, part in other.results.items():
            self.results.setdefault(kind, LoadResult()).add(part)
        for key, part in other.by_day.items():
            self.by_day.setdefault(key, LoadResult()).add(part)
        for kind, days in other.days.items():
            self.days.setdefault(kind, set()).update(days)
        self.aggregate_days |= other.aggregate_days
        self.messages += other.messages
        self.bytes += other.bytes
        self.bytes_by_day.update(other.bytes_by_day)
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.seconds += other.seconds
        self.failures.update(other.failures)
        self.write_streams += other.write_streams
        self.load_ids += other.load_ids


class Loader:
    """Loads received batch messages into one warehouse, holding the queue's loader store."""

    def __init__(self, queue: BatchQueue | None, warehouse: Warehouse, store: LoaderStore) -> None:
        self.queue = queue
        self.warehouse = warehouse
        self.store = store
        self.write_streams = 0  # created by this loader's loads so far

    def recover(self) -> int:
        """Finish or forget every load a crashed loader left between intent and record."""
        recovered = 0
        for intent in self.store.pending():
            if self.warehouse.recover(intent.load_id, intent.warehouse):
                self.store.finish(intent)
                log.warning("load %s was committed before a crash: recorded", intent.load_id)
            else:
                self.store.abandon(intent)
                log.warning("load %s never committed: its batches load again", intent.load_id)
            recovered += 1
        return recovered

    def unreported(self) -> list[LoadOutcome]:
        """Loads committed and recorded whose outcome never reached Dagster: the loader that
        made them stopped first (after the commit, before its run yielded them)."""
        return [LoadOutcome.from_report(report) for report in self.store.unreported()]

    def reported(self, outcome: LoadOutcome) -> None:
        """Dagster has the outcome's events: the store may forget its reports."""
        self.store.reported(outcome.load_ids)

    def load(self, messages: Sequence[ReceivedMessage]) -> LoadOutcome:
        """Load every batch message (skipping what is loaded), then delete the loaded ones."""
        started = time.monotonic()
        by_batch: dict[str, list[ReceivedMessage]] = {}  # SQS may carry a batch twice
        staged: list[StagedBatch] = []
        unreadable: dict[str, tuple[BatchKind, str, BaseException]] = {}
        for message in messages:
            header = message.header
            if header is None:  # not a batch this pipeline wrote: it goes to the DLQ
                error = message.error or "not a batch message"
                record_failure(self.queue.s3, self.queue.bucket, message, "load", error)
                continue
            if header.batch_id in by_batch:
                by_batch[header.batch_id].append(message)
                continue
            by_batch[header.batch_id] = [message]
            try:
                body = self.queue.body(message)
            except Exception as error:
                if is_transient(error):
                    raise
                unreadable[header.batch_id] = (header.kind, header.day, error)
                continue
            staged.append(
                StagedBatch(header.batch_id, header.kind, header.day, header.row_count, body)
            )
        outcome = self.load_batches(staged, unreadable)
        outcome.messages = len(messages)
        for batch_id, error in outcome.failures.items():
            message = by_batch[batch_id][0]
            record_failure(self.queue.s3, self.queue.bucket, message, "load", error)
            log.error("batch %s failed to load: %s", batch_id, error)
        self.queue.delete(
            [
                m
                for batch_id, copies in by_batch.items()
                if batch_id not in outcome.failures
                for m in copies
            ]
        )
        outcome.seconds = time.monotonic() - started
        return outcome

    def load_batches(
        self,
        staged: Sequence[StagedBatch],
        unreadable: dict[str, tuple[BatchKind, str, BaseException]] | None = None,
    ) -> LoadOutcome:
        """Load batches whose bodies are at hand (the part of `load` that needs no SQS);
        `unreadable`: batch id -> (kind, day, why) of those whose body could not be fetched."""
        self.recover()
        unreadable = unreadable or {}
        failed = {batch_id: error for batch_id, (_, _, error) in unreadable.items()}
        where = {batch_id: (kind, day) for batch_id, (kind, day, _) in unreadable.items()}
        where |= {batch.batch_id: (BatchKind(batch.kind), batch.day) for batch in staged}
        outcome = LoadOutcome(bytes=sum(len(batch.ndjson_gz) for batch in staged))
        for batch in staged:
            outcome.bytes_by_day[(BatchKind(batch.kind), batch.day)] += len(batch.ndjson_gz)
        streams_before = self.write_streams
        for part in self._commit_isolating_failures(list(staged), failed):
            outcome.add(part)
        outcome.write_streams = self.write_streams - streams_before
        outcome.failures = failed
        for batch_id in failed:
            kind, day = where[batch_id]
            for result in (
                outcome.results.setdefault(kind, LoadResult()),
                outcome.by_day.setdefault((kind, day), LoadResult()),
            ):
                result.batches += 1
                result.failed_batch_ids.append(batch_id)
        return outcome

    def _commit_isolating_failures(
        self, staged: list[StagedBatch], failed: dict[str, BaseException]
    ) -> list[LoadOutcome]:
        """One load for all; on a non-transient failure, one per batch (fills `failed`)."""
        try:
            return [self._commit(staged, failed)]
        except Exception as error:
            if is_transient(error):
                raise
            if len(staged) == 1:
                failed[staged[0].batch_id] = error
                return []
            log.warning("a load of %d batches failed (%s); one by one now", len(staged), error)
        parts = []
        for batch in staged:
            try:
                parts.append(self._commit([batch], failed))
            except Exception as error:
                if is_transient(error):
                    raise
                failed[batch.batch_id] = error
        return parts

    def _commit(self, staged: list[StagedBatch], failed: dict[str, BaseException]) -> LoadOutcome:
        plan = plan_load(staged, self.store.known, self.store.loaded_batches)
        failed.update(plan.failed)
        outcome = LoadOutcome.of_plan(plan)
        if not plan.writes_anything:
            return outcome
        prepared = self.warehouse.prepare(plan)
        self.write_streams += len(prepared.get("streams", ()))
        intent = Intent(
            load_id=plan.load_id,
            created_at=time.time(),
            keys=[key.hex() for key in plan.new_keys],
            batch_ids=[batch.batch_id for batch in plan.batches],
            warehouse=prepared,
            report=outcome.to_report(),
        )
        self.store.begin(intent)
        try:
            self.warehouse.commit(plan, prepared)
        except Exception as error:
            if is_transient(error):
                raise  # the intent stays: the next load recovers it first
            try:
                committed = self.warehouse.recover(plan.load_id, prepared)
            except Exception as check:
                if is_transient(check):
                    raise  # cannot tell now: the intent stays for the next load
                committed = False  # refused again: no one will ever commit these streams
            if committed:
                self.store.finish(intent)  # it did commit: the error came after
                return outcome
            self.store.abandon(intent)
            raise
        self.store.finish(intent)
        return outcome


def is_transient(error: BaseException) -> bool:
    """Errors that say nothing about the batch: retry instead of isolating."""
    transient: tuple[type[BaseException], ...] = (
        TransientWarehouseError,
        ConnectionError,
        TimeoutError,
        EndpointConnectionError,
        ConnectionClosedError,
        ReadTimeoutError,
        ConnectTimeoutError,
    )
    if isinstance(error, ClientError):  # AWS answered: its fault (5xx) or throttling
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in {"Throttling", "ThrottlingException", "SlowDown"}
    return isinstance(error, transient)
