"""What one load writes, decided before anything is written (pure, given the store's answers).

From the batches of one receive: the ones the ledger already has are skipped whole; the others
are decoded, the first copy of each key within the load wins (by received_at, batch id,
position), and keys the store already holds are dropped. What is left is the load: the fresh
rows per table, the aggregate deltas those rows make (exactly: distinct users are counted
through first-seen keys, not re-derived from the table), the ledger rows and every key the
store must hold once the load is committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from analytics_pipeline.contract.batches import (
    BatchKind,
    InvalidBatchMessage,
    decode_event_rows,
    decode_quarantine_rows,
    decompress,
)
from analytics_pipeline.loader import store as keys
from analytics_pipeline.warehouse.base import (
    ActiveUsersDelta,
    BatchOutcome,
    EventCountDelta,
    LoadPlan,
    StagedBatch,
)

_DECODERS: dict[BatchKind, Callable[[bytes], Sequence[Any]]] = {
    BatchKind.EVENTS: decode_event_rows,
    BatchKind.QUARANTINE: decode_quarantine_rows,
}


def plan_load(
    batches: Sequence[StagedBatch],
    known: Callable[[Sequence[bytes]], set[bytes]],
    loaded_batches: Callable[[Iterable[str]], set[str]],
) -> LoadPlan:
    """The load of `batches`, given the store's `known` keys and `loaded_batches` ledger."""
    distinct: dict[str, StagedBatch] = {}
    for batch in batches:
        distinct.setdefault(batch.batch_id, batch)
    plan = LoadPlan(load_id=uuid.uuid4().hex)
    plan.kinds = {batch_id: BatchKind(batch.kind) for batch_id, batch in distinct.items()}
    already = loaded_batches(distinct)
    plan.already_loaded = sorted(already)

    # Decode the fresh batches; an unreadable body fails its batch only.
    decoded: list[tuple[StagedBatch, Sequence[Any]]] = []
    for batch in distinct.values():
        if batch.batch_id in already:
            continue
        try:
            rows = _DECODERS[BatchKind(batch.kind)](decompress(batch.ndjson_gz))
        except Exception as error:  # corrupt gzip, rows the contract cannot read
            plan.failed[batch.batch_id] = InvalidBatchMessage(
                f"the body is not gzip NDJSON of {batch.kind} rows: {type(error).__name__}: {error}"
            )
            continue
        decoded.append((batch, rows))

    # First copy of each key within the load: (received_at, batch id, position) decides.
    first: dict[bytes, tuple[tuple[datetime, str, int], StagedBatch, Any]] = {}
    outcomes: dict[str, BatchOutcome] = {}
    position = 0
    for batch, rows in decoded:
        kind = BatchKind(batch.kind)
        outcomes[batch.batch_id] = BatchOutcome(
            batch.batch_id, kind, batch.day, batch.row_count, rows_received=len(rows)
        )
        for row in rows:
            key = _row_key(kind, row)
            order = (row.received_at, batch.batch_id, position)
            position += 1
            current = first.get(key)
            if current is None or order < current[0]:
                first[key] = (order, batch, row)

    stored = known(list(first))
    for key, (_, batch, row) in first.items():
        if key in stored:
            continue
        if row.batch_id is None:
            row.batch_id = batch.batch_id
        outcomes[batch.batch_id].rows_inserted += 1
        plan.new_keys.append(key)
        if BatchKind(batch.kind) is BatchKind.EVENTS:
            plan.events.append(row)
        else:
            plan.quarantine.append(row)
    plan.batches = list(outcomes.values())
    _aggregate(plan, known)
    return plan


def _row_key(kind: BatchKind, row: Any) -> bytes:
    if kind is BatchKind.EVENTS:
        return keys.digest(keys.MESSAGE_ID, row.message_id)
    return keys.digest(keys.QUARANTINE_ID, row.quarantine_id)


def first_seen_keys(row: Any) -> dict[str, bytes]:
    """The aggregate pairs an event counts in, as store keys: (day, user) for the active users,
    (day, userId) or (day, anonymousId), (day, type, event, user) for the users of an event."""
    day = row.timestamp.astimezone(UTC).date().isoformat()
    user = row.user_id or row.anonymous_id
    pairs = {
        "active": keys.digest(keys.ACTIVE_USER, day, user),
        "event_user": keys.digest(keys.EVENT_USER, day, row.type, row.event, user),
    }
    if row.user_id:
        pairs["identified"] = keys.digest(keys.IDENTIFIED_USER, day, row.user_id)
    else:
        pairs["anonymous"] = keys.digest(keys.ANONYMOUS_USER, day, row.anonymous_id)
    return pairs


def _aggregate(plan: LoadPlan, known: Callable[[Sequence[bytes]], set[bytes]]) -> None:
    """Deltas of `daily_event_counts` and `daily_active_users` the plan's events make.

    Distinct counts are exact: a (day, user) or (day, type, event, user) pair counts when the
    store has never seen it, and at most once within the load. The definitions are those of the
    SQL that recomputes a day: users = distinct coalesce(userId, anonymousId); identified =
    distinct userId; anonymous = distinct anonymousId of events without a userId.
    """
    candidates = [(row, first_seen_keys(row)) for row in plan.events]
    seen = known([key for _, pairs in candidates for key in pairs.values()])
    counts: dict[tuple[date, str, str | None], list[int]] = {}
    active: dict[date, list[int]] = {}
    for row, pairs in candidates:
        day = row.timestamp.astimezone(UTC).date()
        count = counts.setdefault((day, row.type, row.event), [0, 0])
        count[0] += 1
        users = active.setdefault(day, [0, 0, 0])
        for name, key in pairs.items():
            if key in seen:
                continue
            seen.add(key)  # once within the load too
            plan.new_keys.append(key)
            if name == "event_user":
                count[1] += 1
            else:
                users[("active", "identified", "anonymous").index(name)] += 1
    plan.event_counts = [
        EventCountDelta(day, kind, event, events, users)
        for (day, kind, event), (events, users) in sorted(
            counts.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
        )
    ]
    plan.active_users = [
        ActiveUsersDelta(day, *values) for day, values in sorted(active.items()) if any(values)
    ]
