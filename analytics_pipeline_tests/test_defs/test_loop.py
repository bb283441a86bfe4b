"""The load loop's job in process, against the AWS emulator: a run that reaches its deadline."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from analytics_pipeline.defs.ingest import LOOP_JOB_NAME
from analytics_pipeline.defs.ingest.loop import DEAD_AFTER_SECONDS, is_dead, loop_job
from analytics_pipeline.defs.partitions import day_partitions
from analytics_pipeline.defs.resources import resources_for
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.traffic import put_mixed_traffic


def test_a_loop_run_that_reaches_its_deadline_succeeds_having_loaded_and_reported(
    new_pipeline: Callable[..., Settings],
) -> None:
    """The op only yields events: a loop whose time is up is a successful run (not a step that
    "did not return an output"), so the sensor's next loop follows a green run."""
    settings = new_pipeline()
    traffic = put_mixed_traffic(settings, blobs=3)
    KinesisTrigger(settings).run_until_idle(timeout=60)
    job = loop_job(settings, day_partitions(settings))
    assert job.name == LOOP_JOB_NAME

    result = job.execute_in_process(
        run_config={"ops": {"events_loop": {"config": {"seconds": 3}}}},
        resources=resources_for(settings),
        instance=dg.DagsterInstance.ephemeral(),
    )

    assert result.success
    materialized = {
        m.asset_key.to_user_string() for m in result.asset_materializations_for_node("events_loop")
    }
    assert {"events", "daily_event_counts", "daily_active_users"} <= materialized
    counts = open_warehouse(settings).table_row_counts()
    assert counts["events"] == len(traffic.valid)


NOW = 1_800_000_000.0


def test_a_loop_run_between_an_op_failure_and_its_retry_is_not_taken_for_dead() -> None:
    """During the RetryPolicy's backoff the op has let the store go, but the run wrote its
    STEP_UP_FOR_RETRY seconds ago: failing it would start a second loop beside a live one."""
    ten_minutes_old = NOW - 600
    assert not is_dead(ten_minutes_old, NOW - 10, store_held=False, now=NOW)
    assert not is_dead(ten_minutes_old, NOW - DEAD_AFTER_SECONDS + 1, store_held=False, now=NOW)


def test_a_loop_run_quiet_and_without_its_store_is_dead_and_one_holding_it_is_not() -> None:
    ten_minutes_old = NOW - 600
    assert is_dead(ten_minutes_old, NOW - DEAD_AFTER_SECONDS, store_held=False, now=NOW)
    assert not is_dead(ten_minutes_old, NOW - 3600, store_held=True, now=NOW)  # idle, loading
    assert not is_dead(NOW - 5, NOW - 5, store_held=False, now=NOW)  # still opening the store
