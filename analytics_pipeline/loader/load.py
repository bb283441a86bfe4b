"""Load referenced batches into the warehouse, then delete their SQS messages: in that order.

Deleting only after the warehouse commit makes the path at-least-once; the warehouse ledger and
messageId dedupe turn that into exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.loader.batch_queue import BatchQueue, BatchRef, refs_by_kind
from analytics_pipeline.warehouse.base import LoadResult, StagedBatch, Warehouse

log = logging.getLogger(__name__)


def load_refs(
    queue: BatchQueue,
    warehouse: Warehouse,
    refs: Sequence[BatchRef],
    dedupe_window_days: int,
) -> dict[BatchKind, LoadResult]:
    """Load every referenced batch (skipping those already in the ledger), then delete them."""
    results: dict[BatchKind, LoadResult] = {}
    for kind, kind_refs in refs_by_kind(refs).items():
        already = warehouse.loaded_batch_ids([ref.batch_id for ref in kind_refs])
        staged: dict[str, StagedBatch] = {}
        for ref in kind_refs:
            if ref.batch_id in already or ref.batch_id in staged:
                continue
            staged[ref.batch_id] = StagedBatch(
                batch_id=ref.batch_id,
                kind=kind,
                day=ref.day,
                row_count=ref.row_count,
                ndjson_gz=queue.fetch(ref),
            )
        result = warehouse.load_batches(list(staged.values()), dedupe_window_days)
        batch_ids = {ref.batch_id for ref in kind_refs}
        result.batches = len(batch_ids)
        result.batches_already_loaded += len(batch_ids & already)
        results[kind] = result
    queue.delete(refs)
    return results


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
