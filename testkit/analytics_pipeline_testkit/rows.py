"""Rows and staged batches for warehouse tests, built through the real contract encoders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from analytics_pipeline.contract.batches import BatchKind, batch_id_for, encode_rows
from analytics_pipeline.contract.rows import EventRow, QuarantineRow
from analytics_pipeline.ingest.packing import compress_batch
from analytics_pipeline.warehouse.base import StagedBatch
from analytics_pipeline.warehouse.bigquery import BigQueryConfig, BigQueryWarehouse

NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def event(
    message_id: str,
    *,
    timestamp: datetime = NOON,
    received_at: datetime | None = None,
    sent_at: datetime | None = None,
    type: str = "track",
    name: str | None = "Video Recorded",
    user_id: str | None = None,
    anonymous_id: str | None = "a-1",
    properties: object = None,
) -> EventRow:
    received = received_at or timestamp + timedelta(seconds=1)
    return EventRow(
        message_id=message_id,
        type=type,
        event=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        original_timestamp=timestamp,
        sent_at=sent_at or received - timedelta(milliseconds=200),
        received_at=received,
        properties=msgspec.Raw(msgspec.json.encode(properties)),
    )


def quarantined(quarantine_id: str, *, received_at: datetime = NOON) -> QuarantineRow:
    return QuarantineRow(
        quarantine_id=quarantine_id,
        reason="invalid_event",
        detail="Expected `str`, got `int` - at `$.userId`",
        payload='{"userId": 5}',
        message_id=None,
        received_at=received_at,
        source="kinesis:analytics-events:shardId-000000000000:1",
    )


def staged(
    rows: Sequence[EventRow] | Sequence[QuarantineRow],
    *,
    kind: BatchKind = BatchKind.EVENTS,
    batch_id: str | None = None,
    day: str | None = None,
    row_count: int | None = None,
) -> StagedBatch:
    """A batch as the Lambda would send it: deterministic id, declared count = rows."""
    if day is None:
        first = rows[0]
        moment = first.timestamp if isinstance(first, EventRow) else first.received_at
        day = moment.date().isoformat()
    keys = [row.message_id if isinstance(row, EventRow) else row.quarantine_id for row in rows]
    return StagedBatch(
        batch_id=batch_id or batch_id_for(kind, day, keys),
        kind=kind,
        day=day,
        row_count=len(rows) if row_count is None else row_count,
        ndjson_gz=compress_batch(encode_rows(rows)),
    )


def bigquery_warehouse_on(endpoint: Any, **overrides: Any) -> BigQueryWarehouse:
    """A BigQuery warehouse on the emulator `endpoint` (a conftest `BigQueryEndpoint`), in a
    dataset of its own so tests sharing one emulator never see each other's tables."""
    config = BigQueryConfig(
        project=endpoint.project,
        dataset=f"t_{uuid.uuid4().hex[:12]}",
        emulator_rest=endpoint.rest,
        emulator_grpc=endpoint.grpc,
        **overrides,
    )
    return BigQueryWarehouse(config)
