"""The loop job as Dagster runs it: it loads what waits, reports each load, and ends well.

A loop run that reaches its deadline must end in SUCCESS: the sensor starts the next, and a
failed run in the UI every ANALYTICS_LOOP_SECONDS would hide the real failures.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.definitions import build_definitions
from analytics_pipeline.defs.ingest import LOOP_JOB_NAME
from analytics_pipeline.loader import LoaderStore
from analytics_pipeline.loader.loop import open_loader
from analytics_pipeline.local.trigger import KinesisTrigger
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.traffic import Traffic, put_mixed_traffic


def queued_traffic(new_pipeline: Callable[..., Settings]) -> tuple[Settings, Traffic]:
    """A pipeline whose queue holds mixed traffic of today and yesterday."""
    # The traffic has yesterday's events: a partition only from this start (unset, the
    # partitions would start today, the day this state folder first saw the code location).
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    settings = new_pipeline(ANALYTICS_PARTITION_START=yesterday.isoformat())
    traffic = put_mixed_traffic(settings, blobs=4)
    KinesisTrigger(settings).run_until_idle(timeout=60)
    return settings, traffic


def run_loop_job(settings: Settings, seconds: int) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def(LOOP_JOB_NAME)
    return job.execute_in_process(
        run_config={"ops": {"events_loop": {"config": {"seconds": seconds}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_a_loop_run_loads_reports_and_succeeds(new_pipeline: Callable[..., Settings]) -> None:
    settings, traffic = queued_traffic(new_pipeline)

    result = run_loop_job(settings, seconds=3)

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


def test_a_loop_run_reports_the_load_a_stopped_loader_never_reported(
    new_pipeline: Callable[..., Settings],
) -> None:
    """A loader that committed a load and stopped before any run yielded it: the next loop run
    reports it first, with its numbers, and the store forgets the report."""
    settings, _ = queued_traffic(new_pipeline)
    with open_loader(settings) as loader:  # loads, and never reports (no loop run)
        messages = loader.queue.receive(
            max_messages=settings.load_max_messages,
            visibility_timeout=settings.sqs_visibility_seconds,
            first_wait_seconds=5,
        )
        unreported = loader.load(messages)
    assert unreported.load_ids and unreported.result(BatchKind.EVENTS).rows_inserted

    result = run_loop_job(settings, seconds=2)

    assert result.success
    recovered = [
        m
        for m in result.asset_materializations_for_node("events_loop")
        if m.asset_key == dg.AssetKey("events") and "recovered_load_ids" in m.metadata
    ]
    assert {m.metadata["recovered_load_ids"].value for m in recovered} == set(unreported.load_ids)
    assert (
        sum(m.metadata["rows_loaded"].value for m in recovered)
        == unreported.result(BatchKind.EVENTS).rows_inserted
    )
    assert all("bytes" not in m.metadata for m in recovered)  # not known after the fact
    checks = result.get_asset_check_evaluations()
    assert checks and all(
        check.passed for check in checks if check.check_name == "counts_reconcile"
    )
    with LoaderStore.open(settings.loader_store_dir, retention_days=31) as store:
        assert store.unreported() == []
