"""The loop job as Dagster runs it: it loads what waits, reports each load, and ends well.

A loop run that reaches its deadline must end in SUCCESS: the sensor starts the next, and a
failed run in the UI every ANALYTICS_LOOP_SECONDS would hide the real failures.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from analytics_pipeline.definitions import build_definitions
from analytics_pipeline.defs.ingest import LOOP_JOB_NAME
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.traffic import put_mixed_traffic


def test_a_loop_run_loads_reports_and_succeeds(new_pipeline: Callable[..., Settings]) -> None:
    # The traffic has yesterday's events: a partition only from this start (unset, the
    # partitions would start today, the day this state folder first saw the code location).
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    settings = new_pipeline(ANALYTICS_PARTITION_START=yesterday.isoformat())
    traffic = put_mixed_traffic(settings, blobs=4)
    KinesisTrigger(settings).run_until_idle(timeout=60)
    job = build_definitions(settings).resolve_job_def(LOOP_JOB_NAME)

    result = job.execute_in_process(
        run_config={"ops": {"events_loop": {"config": {"seconds": 3}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )

    assert result.success
    materialized = [
        m
        for m in result.asset_materializations_for_node("events_loop")
        if m.asset_key == dg.AssetKey("events")
    ]
    today = datetime.now(UTC).date()
    days = {(today - timedelta(days=1)).isoformat(), today.isoformat()}  # the traffic's days
    assert {m.partition for m in materialized} == days
    counts = open_warehouse(settings).table_row_counts()
    assert counts["events"] == len(traffic.valid)
