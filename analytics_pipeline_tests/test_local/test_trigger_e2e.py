"""The trigger and the real handler against the emulator over HTTP: Kinesis in, SQS batches out."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.ingest.handler import build_handler
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.traffic import (
    drain_queue,
    put_mixed_traffic,
    wait_for_message_ids,
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


@pytest.mark.e2e
def test_failed_record_mid_batch_is_retried_from_that_record(pipeline_settings: Settings) -> None:
    """Record 4 of the first batch reported failed: 1-3 are kept, the retry starts at 4."""
    traffic = put_mixed_traffic(pipeline_settings, blobs=20)
    real_handler = build_handler(pipeline_settings)
    invocations: list[tuple[str, list[str]]] = []  # (shard, sequence numbers)

    def flaky_handler(event: Mapping[str, Any], context: Any) -> Mapping[str, Any]:
        records = event["Records"]
        shard = records[0]["eventID"].split(":")[0]
        invocations.append((shard, [r["kinesis"]["sequenceNumber"] for r in records]))
        if len(invocations) == 1:  # handle the first three, then "fail" the fourth
            real_handler({"Records": records[:3]}, context)
            return {
                "batchItemFailures": [{"itemIdentifier": records[3]["kinesis"]["sequenceNumber"]}]
            }
        return real_handler(event, context)

    trigger = KinesisTrigger(pipeline_settings, handler=flaky_handler, retry_base_seconds=0.01)
    trigger.run_until_idle(timeout=60)
    received = drain_queue(pipeline_settings)

    failed_shard, first = invocations[0]
    retry = next(seqs for shard, seqs in invocations[1:] if shard == failed_shard)
    assert retry[0] == first[3]  # the shard resumed exactly at the failed record
    loaded = collections.Counter(row.message_id for row in received.events)
    assert sorted(loaded) == sorted(traffic.valid)
    assert set(loaded.values()) == {1}  # records 1-3 were not re-delivered


def checkpointed_records(checkpoint: Path) -> int:
    """Records behind the trigger's checkpoints (moto numbers each shard's records 1, 2, ...)."""
    try:
        return sum(int(seq) for seq in json.loads(checkpoint.read_text())["shards"].values())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.e2e
def test_trigger_killed_mid_stream_and_restarted_skips_no_record(
    pipeline_settings: Settings,
) -> None:
    settings_env = {
        **os.environ,
        **pipeline_settings.to_env(),
        "ANALYTICS_TRIGGER_BATCH_SIZE": "10",
    }
    traffic = put_mixed_traffic(pipeline_settings, blobs=1500)
    log_path = pipeline_settings.state_dir / "trigger.log"
    checkpoint = (
        pipeline_settings.state_dir / f"trigger-checkpoints-{pipeline_settings.stream_name}.json"
    )

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "analytics_pipeline.local.trigger"],
                env=settings_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    first = start()
    try:
        deadline = time.monotonic() + 30
        while checkpointed_records(checkpoint) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)  # kill once it is well into the stream, far from its end
        assert first.poll() is None, log_path.read_text()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    received = drain_queue(pipeline_settings)
    seen_before_restart = {row.message_id for row in received.events}
    assert 0 < len(seen_before_restart) < len(traffic.valid), "kill must land mid-stream"

    second = start()
    try:
        received = wait_for_message_ids(pipeline_settings, set(traffic.valid), 60, received)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=10)

    assert second.returncode == 0  # SIGTERM: a clean stop
    assert set(traffic.valid) <= {row.message_id for row in received.events}
