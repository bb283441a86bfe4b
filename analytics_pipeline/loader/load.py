"""Load referenced batches into the warehouse, then delete their SQS messages: in that order.

Deleting only after the warehouse commit makes the path at-least-once; the warehouse ledger and
messageId dedupe turn that into exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader.batch_queue import BatchQueue, BatchRef, refs_by_kind
from analytics_pipeline.loader.failures import record_failure
from analytics_pipeline.warehouse.base import (
    LoadResult,
    StagedBatch,
    TransientWarehouseError,
    Warehouse,
)

log = logging.getLogger(__name__)


def load_refs(
    queue: BatchQueue,
    warehouse: Warehouse,
    refs: Sequence[BatchRef],
    dedupe_window_days: int,
) -> dict[BatchKind, LoadResult]:
    """Load every referenced batch (skipping those already in the ledger), then delete them.

    A batch that cannot be loaded (a corrupt body, rows the warehouse refuses) must not take
    its run's other batches down with it: when a load of several batches fails for a reason
    that is not transient, each batch is loaded on its own. Failed batches are recorded
    (`failures.record_failure`, read by `dlq list`), listed in `LoadResult.failed_batch_ids`
    and NOT deleted: SQS redelivers them and after `ANALYTICS_QUEUE_MAX_RECEIVES` receives
    moves them to the dead-letter queue. Transient errors (warehouse locked or unreachable)
    are raised at once: the whole run retries, nothing is isolated.
    """
    results: dict[BatchKind, LoadResult] = {}
    failed: set[str] = set()
    for kind, kind_refs in refs_by_kind(refs).items():
        # Only a redelivered message is likely to be loaded already; asking the ledger about
        # first deliveries too would cost a query per micro-batch (on BigQuery 10 MB billed at
        # least). The load's own ledger check inside its transaction still catches the rare
        # first delivery of a batch id that is already loaded (an identical Lambda retry).
        redelivered = [ref.batch_id for ref in kind_refs if ref.receive_count > 1]
        already = warehouse.loaded_batch_ids(redelivered) if redelivered else set()
        staged: dict[str, StagedBatch] = {}
        kind_failed: dict[str, BaseException] = {}
        for ref in kind_refs:
            if ref.batch_id in already or ref.batch_id in staged or ref.batch_id in kind_failed:
                continue
            try:
                body = queue.fetch(ref)
            except Exception as error:
                if is_transient(error):
                    raise
                kind_failed[ref.batch_id] = error
                continue
            staged[ref.batch_id] = StagedBatch(
                batch_id=ref.batch_id,
                kind=kind,
                day=ref.day,
                row_count=ref.row_count,
                ndjson_gz=body,
            )
        result = _load_isolating_failures(
            warehouse, list(staged.values()), dedupe_window_days, kind_failed
        )
        batch_ids = {ref.batch_id for ref in kind_refs}
        result.batches = len(batch_ids)
        result.batches_already_loaded += len(batch_ids & already)
        result.failed_batch_ids = sorted(kind_failed)
        for ref in kind_refs:
            if ref.batch_id in kind_failed:
                record_failure(queue.s3, queue.bucket, ref, "load", kind_failed[ref.batch_id])
                log.error("batch %s failed to load: %s", ref.batch_id, kind_failed[ref.batch_id])
        failed |= set(kind_failed)
        results[kind] = result
    queue.delete([ref for ref in refs if ref.batch_id not in failed])
    return results


def _load_isolating_failures(
    warehouse: Warehouse,
    staged: list[StagedBatch],
    dedupe_window_days: int,
    failed: dict[str, BaseException],
) -> LoadResult:
    """One transaction for all; on a non-transient error, one per batch (fills `failed`)."""
    try:
        return warehouse.load_batches(staged, dedupe_window_days)
    except Exception as error:
        if is_transient(error):
            raise
        if len(staged) == 1:
            failed[staged[0].batch_id] = error
            return LoadResult()
        log.warning("a load of %d batches failed (%s); loading them one by one", len(staged), error)
    total = LoadResult()
    for batch in staged:
        try:
            part = warehouse.load_batches([batch], dedupe_window_days)
        except Exception as error:
            if is_transient(error):
                raise
            failed[batch.batch_id] = error
            continue
        _add(total, part)
    return total


def _add(total: LoadResult, part: LoadResult) -> None:
    total.batches_already_loaded += part.batches_already_loaded
    total.rows_received += part.rows_received
    total.rows_inserted += part.rows_inserted
    total.duplicates_skipped += part.duplicates_skipped
    total.rows_declared += part.rows_declared
    total.loaded_batch_ids += part.loaded_batch_ids
    for name in ("seconds_from_sent_at_p50", "seconds_from_sent_at_max"):
        mine, theirs = getattr(total, name), getattr(part, name)
        if theirs is not None and (mine is None or theirs > mine):
            setattr(total, name, theirs)  # the p50 of one-by-one loads: the worst batch's


def is_transient(error: BaseException) -> bool:
    """Errors that say nothing about the batch: retry the whole run instead of isolating."""
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


def drain_day(
    queue: BatchQueue,
    day: str,
    kinds: Collection[BatchKind],
    max_messages: int,
    visibility_timeout: int,
) -> list[BatchRef]:
    """Receive what waits in the queue, keep the batches of `day` and `kinds`, release the rest.

    This is what a run started by hand (from the UI, without run config) loads.
    """
    received = queue.receive(max_messages=max_messages, visibility_timeout=visibility_timeout)
    mine: list[BatchRef] = []
    others = []
    for message in received:
        header = message.header
        if header is not None and header.day == day and header.kind in kinds:
            mine.append(queue.stage(message))
        else:
            others.append(message)
    if others:
        queue.release(others)
    log.info("drained %d batches for %s, released %d others", len(mine), day, len(others))
    return mine
