"""Dagster as deployed: the end-to-end scenario with the instance on a real PostgreSQL.

deploy/dagster/dagster.yaml (PostgreSQL storage through dagster-postgres, compute logs to S3,
run retries and monitoring) and deploy/dagster/workspace.yaml (the code location from a
`dagster api grpc` server) run the same traffic as e2e/test_pipeline.py: every valid messageId
lands once, every invalid one in quarantine with its reason, and the runs are in PostgreSQL's
own tables, their step logs in the bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_pipeline import aws
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import warehouse_from_settings
from analytics_pipeline_tests.conftest import free_port
from analytics_pipeline_tests.e2e.stack import start_trigger, wait_for
from analytics_pipeline_tests.e2e.test_pipeline import send_traffic
from analytics_pipeline_tests.test_deploy.dagster_production import ProductionDagster
from analytics_pipeline_tests.test_deploy.postgres import PostgresServer, start_postgres

pytestmark = pytest.mark.e2e


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
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "ANALYTICS_SENSOR_INTERVAL_SECONDS": "5",
        }
    )
    settings.state_dir.mkdir(parents=True)
    ensure_resources(settings)
    return settings


def test_the_pipeline_runs_with_dagster_on_postgresql(
    settings: Settings, postgres: PostgresServer
) -> None:
    trigger = start_trigger(settings)
    dagster = ProductionDagster(settings, postgres, free_port(), free_port())
    try:
        dagster.wait_ready()
        traffic = send_traffic(settings)
        warehouse = warehouse_from_settings(settings)
        batch_queue = aws.client("sqs", settings)
        queue_url = batch_queue.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]

        def loaded() -> tuple[int, int] | None:
            assert trigger.alive(), trigger.tail()
            try:
                counts = warehouse.table_row_counts()
            except Exception:  # tables not created yet, or the loader holds the file
                return None
            seen = (counts.get("events", 0), counts.get("events_quarantine", 0))
            depth = batch_queue.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            expected = (len(traffic.valid), len(traffic.invalid) + traffic.blob_rejections)
            empty = all(int(value) == 0 for value in depth.values())
            return seen if seen == expected and empty else None

        try:
            wait_for(loaded, timeout=240, interval=2, what="every event loaded, queue empty")
        except AssertionError:
            print(trigger.tail(), dagster.tail(), sep="\n----\n")
            raise

        def finished_runs() -> list[dict] | None:
            # The queue empties when a run deletes its messages, just before the run ends.
            runs = dagster.graphql(
                "{ runsOrError(limit: 100) { ... on Runs { results { runId jobName status } } } }"
            )["runsOrError"]["results"]
            active = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
            return runs if not [r for r in runs if r["status"] in active] else None

        runs = wait_for(finished_runs, timeout=120, interval=1, what="every run finished")
    finally:
        dagster.stop()
        trigger.stop()

    counts = dict(
        warehouse.query("SELECT message_id, count(*) FROM analytics.events GROUP BY 1").rows
    )
    assert set(counts) == traffic.valid and set(counts.values()) == {1}
    quarantine = warehouse.query(
        "SELECT message_id, reason FROM analytics.events_quarantine WHERE message_id IS NOT NULL"
    )
    assert dict(quarantine.rows) == traffic.invalid

    # The runs the webserver showed are PostgreSQL's rows.
    load_runs = {
        run["runId"]: run["status"] for run in runs if run["jobName"] == "load_batches_job"
    }
    assert load_runs and "FAILURE" not in load_runs.values(), runs
    stored = dict(
        postgres.query("SELECT run_id, status FROM runs WHERE pipeline_name = 'load_batches_job'")
    )
    assert stored == load_runs
    materialized = postgres.query(
        "SELECT count(DISTINCT run_id) FROM event_logs WHERE dagster_event_type = "
        "'ASSET_MATERIALIZATION' AND asset_key LIKE '%events%'"
    )[0][0]
    assert materialized == len([s for s in load_runs.values() if s == "SUCCESS"])

    # What run history costs in PostgreSQL (shown with -s; see README, Production).
    all_runs, event_rows, event_bytes = postgres.query(
        "SELECT (SELECT count(*) FROM runs), count(*), sum(pg_column_size(e.*)) FROM event_logs e"
    )[0]
    print(f"postgres: {all_runs} runs, {event_rows} event log rows of {event_bytes:,} bytes")

    # Step logs went to the bucket, under the prefix the template's lifecycle rule expires.
    logs = aws.client("s3", settings).list_objects_v2(
        Bucket=settings.bucket, Prefix="dagster-compute-logs/"
    )
    assert logs.get("KeyCount", 0) > 0
