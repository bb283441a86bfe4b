"""Dagster as deployed: the end-to-end scenario with the instance on a real PostgreSQL.

deploy/dagster/dagster.yaml (PostgreSQL storage through dagster-postgres, compute logs to S3,
run retries and monitoring) and deploy/dagster/workspace.yaml (the code location from a
`dagster api grpc` server) run the same traffic as e2e/test_pipeline.py: every valid messageId
lands once, every invalid one in quarantine with its reason. The load loop runs as it does in
production, only shorter (ANALYTICS_LOOP_SECONDS 30): its run ends, the sensor starts the next
one, and both runs, each load's materializations and the finished run's step logs are where the
instance config puts them (PostgreSQL's tables, the bucket). Terminating a loop run (the
runbook's first step when the loader disk is lost) ends it, op retries notwithstanding.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_pipeline import aws
from analytics_pipeline.defs.ingest.loop import LOOP_JOB_NAME
from analytics_pipeline.loader.store import store_in_use
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.dagster_production import ProductionDagster
from analytics_pipeline_testkit.postgres import PostgresServer, start_postgres
from analytics_pipeline_testkit.processes import (
    descendants,
    free_port,
    start_trigger,
    wait_for,
    wait_gone,
    wait_showing_logs,
)
from analytics_pipeline_tests.e2e.test_pipeline import send_traffic, wait_all_loaded

pytestmark = pytest.mark.e2e

LOOP_SECONDS = 30


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres(free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(aws_endpoint: str, tmp_path: Path) -> Settings:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(
        {
            "AWS_ENDPOINT_URL": aws_endpoint,
            "ANALYTICS_STREAM_NAME": name,
            "ANALYTICS_QUEUE_NAME": name,
            "ANALYTICS_BUCKET": name,
            "ANALYTICS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            "ANALYTICS_STATE_DIR": str(tmp_path / "state"),
            "ANALYTICS_LOADER_STATE_DIR": str(tmp_path / "loader"),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "ANALYTICS_SENSOR_INTERVAL_SECONDS": "5",
            "ANALYTICS_LOOP_SECONDS": str(LOOP_SECONDS),
        }
    )
    settings.state_dir.mkdir(parents=True)
    ensure_resources(settings)
    return settings


def _loop_runs(dagster: ProductionDagster) -> list[dict]:
    runs = dagster.graphql(
        "{ runsOrError(limit: 100) { ... on Runs { results { runId jobName status } } } }"
    )["runsOrError"]["results"]
    return [run for run in runs if run["jobName"] == LOOP_JOB_NAME]


def _terminate_the_running_loop(
    dagster: ProductionDagster, processes: tuple, settings: Settings
) -> str:
    """Terminate the loop run once it is loading (inside its op, holding the store); it must
    end, not retry its op."""

    def loading() -> str | None:
        started = [r["runId"] for r in _loop_runs(dagster) if r["status"] == "STARTED"]
        return started[0] if started and store_in_use(settings.loader_store_dir) else None

    run_id = wait_for(loading, timeout=60, interval=1, what="a loop run holding the store")
    answer = dagster.graphql(
        "mutation($id: String!) { terminateRun(runId: $id) { __typename } }", {"id": run_id}
    )
    assert answer["terminateRun"]["__typename"] == "TerminateRunSuccess", answer

    def ended() -> str | None:
        status = {r["runId"]: r["status"] for r in _loop_runs(dagster)}[run_id]
        return status if status in ("CANCELED", "FAILURE") else None

    wait_showing_logs(processes, ended, 60, what="the terminated loop run ended")
    return run_id


def test_the_pipeline_runs_with_dagster_on_postgresql(
    settings: Settings, postgres: PostgresServer
) -> None:
    trigger = start_trigger(settings)
    dagster = ProductionDagster(settings, postgres, free_port(), free_port())
    processes = (trigger, dagster.code_server, dagster.dev)
    try:
        dagster.wait_ready()
        traffic = send_traffic(settings)
        warehouse = open_warehouse(settings)
        wait_all_loaded(settings, traffic, warehouse, processes)

        def handed_over() -> list[dict] | None:
            # The first loop run ends after LOOP_SECONDS; the sensor starts the next.
            runs = _loop_runs(dagster)
            statuses = [run["status"] for run in runs]  # newest first
            return runs if "SUCCESS" in statuses and statuses[0] != "SUCCESS" else None

        runs = wait_showing_logs(
            processes, handed_over, LOOP_SECONDS + 120, what="a loop run ended, the next started"
        )
        terminated = _terminate_the_running_loop(dagster, processes, settings)
    finally:
        # The loop run is a process the code server spawned: it must stop with the servers.
        spawned = [pid for process in processes[1:] for pid in descendants(process.pid)]
        dagster.stop()
        trigger.stop()
    assert wait_gone(spawned) == []

    counts = dict(
        warehouse.query("SELECT message_id, count(*) FROM analytics.events GROUP BY 1").rows
    )
    assert set(counts) == traffic.valid and set(counts.values()) == {1}
    quarantine = warehouse.query(
        "SELECT message_id, reason FROM analytics.events_quarantine WHERE message_id IS NOT NULL"
    )
    assert dict(quarantine.rows) == traffic.invalid

    # The loop runs the webserver showed are PostgreSQL's rows; no run failed.
    shown = {run["runId"]: run["status"] for run in runs}
    assert "FAILURE" not in shown.values(), runs
    # The terminated run ended at once: no op retry after the interrupt.
    restarts = postgres.query(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_RESTARTED' "
        f"AND run_id = '{terminated}'"
    )
    assert restarts == [(0,)]
    stored = dict(
        postgres.query(f"SELECT run_id, status FROM runs WHERE pipeline_name = '{LOOP_JOB_NAME}'")
    )
    assert set(stored) >= set(shown)
    finished = [run_id for run_id, status in shown.items() if status == "SUCCESS"]
    assert stored[finished[0]] == "SUCCESS"

    # Every load yielded its materializations from inside the loop run, stored in PostgreSQL.
    loads_by_run = dict(
        postgres.query(
            "SELECT run_id, count(*) FROM event_logs WHERE dagster_event_type = "
            "'ASSET_MATERIALIZATION' AND asset_key = '[\"events\"]' GROUP BY run_id"
        )
    )
    assert set(loads_by_run) <= set(stored) and sum(loads_by_run.values()) > 0

    # What run history costs in PostgreSQL (shown with -s; see README, Production).
    all_runs, event_rows, event_bytes = postgres.query(
        "SELECT (SELECT count(*) FROM runs), count(*), sum(pg_column_size(e.*)) FROM event_logs e"
    )[0]
    materializations = postgres.query(
        "SELECT count(*), sum(pg_column_size(e.*)) FROM event_logs e "
        "WHERE dagster_event_type IN ('ASSET_MATERIALIZATION', 'ASSET_CHECK_EVALUATION')"
    )[0]
    print(
        f"postgres: {all_runs} runs, {event_rows} event log rows of {event_bytes:,} bytes; "
        f"{sum(loads_by_run.values())} `events` materializations; materializations and check "
        f"evaluations: {materializations[0]} rows of {materializations[1]:,} bytes"
    )

    # The finished loop run's step logs went to the bucket, under the prefix the template's
    # lifecycle rule expires.
    logs = aws.client("s3", settings).list_objects_v2(
        Bucket=settings.bucket, Prefix="dagster-compute-logs/"
    )
    keys = [item["Key"] for item in logs.get("Contents", [])]
    assert [key for key in keys if finished[0] in key and not key.endswith(".partial")], keys
