"""The trigger and the real handler against the emulator over HTTP: Kinesis in, SQS batches out."""

from __future__ import annotations

import collections

import pytest

from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline_tests.test_local.traffic import (
    drain_queue,
    put_mixed_traffic,
)


@pytest.mark.e2e
def test_trigger_delivers_every_valid_event_once_and_quarantines_the_rest(
    pipeline_settings: Settings,
) -> None:
    traffic = put_mixed_traffic(pipeline_settings, blobs=120)

    KinesisTrigger(pipeline_settings).run_until_idle(timeout=60)
    received = drain_queue(pipeline_settings)

    loaded = collections.Counter(row.message_id for row in received.events)
    assert sorted(loaded) == sorted(traffic.valid)
    assert set(loaded.values()) == {1}
    quarantined_ids = [row.message_id for row in received.quarantine if row.message_id]
    assert sorted(quarantined_ids) == sorted(traffic.invalid)
    assert {row.reason for row in received.quarantine if row.message_id} == {
        Reason.MISSING_EVENT_NAME.value
    }
    blob_rows = [row for row in received.quarantine if row.message_id is None]
    assert len(blob_rows) == traffic.garbage_blobs
    assert blob_rows[0].source.startswith(f"kinesis:{pipeline_settings.stream_name}:shardId-")
    for header in received.headers:  # every row carries the batch it travelled in
        assert header.row_count > 0
    assert {row.batch_id for row in received.events} == {
        h.batch_id for h in received.headers if h.kind == "events"
    }
