"""The loop sensor's rule for a dead loop run (the one it marks failed and replaces).

A wrong "dead" starts a second loop beside a live one (it waits for the store, and the live one
shows as failed); a wrong "alive" leaves the queue unloaded until the run's max runtime.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from analytics_pipeline.defs.ingest.loop import (
    DEAD_AFTER_SECONDS,
    LOOP_JOB_NAME,
    LOOP_TAG,
    is_dead,
    loop_job,
    loop_sensor,
)
from analytics_pipeline.defs.partitions import day_partitions
from analytics_pipeline.settings import Settings

NOW = 1_800_000_000.0
TEN_MINUTES_OLD = NOW - 600


def test_a_loop_run_between_an_op_failure_and_its_retry_is_not_taken_for_dead() -> None:
    """During the RetryPolicy's backoff the op has let the store go, but the run wrote its
    STEP_UP_FOR_RETRY seconds ago."""
    assert not is_dead(TEN_MINUTES_OLD, NOW - 10, store_held=False, now=NOW)
    assert not is_dead(TEN_MINUTES_OLD, NOW - DEAD_AFTER_SECONDS + 1, store_held=False, now=NOW)


def test_a_loop_run_quiet_and_without_its_store_is_dead_and_one_holding_it_is_not() -> None:
    assert is_dead(TEN_MINUTES_OLD, NOW - DEAD_AFTER_SECONDS, store_held=False, now=NOW)
    assert not is_dead(TEN_MINUTES_OLD, NOW - 3600, store_held=True, now=NOW)  # idle, loading
    assert not is_dead(NOW - 5, NOW - 5, store_held=False, now=NOW)  # still opening the store


def test_the_sensor_keeps_the_loop_of_its_own_queue_only(tmp_path: Path) -> None:
    """Two pipelines on one Dagster instance: another queue's live loop run does not stand for
    this queue's, and this queue's young loop run does."""
    settings = Settings.from_env(
        {"ANALYTICS_QUEUE_NAME": "queue-a", "ANALYTICS_STATE_DIR": str(tmp_path)}
    )
    job = loop_job(settings, day_partitions(settings))
    sensor = loop_sensor(settings, job)
    assert job.run_tags[LOOP_TAG] == "queue-a"  # every run of the job carries its queue

    def tick() -> dg.SensorExecutionData:
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance))

    with dg.DagsterInstance.ephemeral() as instance:
        assert len(tick().run_requests or []) == 1  # no loop at all: start one
        instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.STARTED, tags={LOOP_TAG: "queue-b"}
        )
        assert len(tick().run_requests or []) == 1  # queue-b's loop is not ours
        ours = instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.STARTED, tags={LOOP_TAG: "queue-a"}
        )
        data = tick()
        assert not data.run_requests
        assert data.skip_message == f"loop run {ours.run_id} is running"
        assert {r.dagster_run.job_name for r in instance.get_run_records()} == {LOOP_JOB_NAME}
