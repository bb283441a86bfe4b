"""The code location loads, and every asset spec matches the reviewed snapshot."""

import json
import os
from pathlib import Path

import dagster as dg

from analytics_pipeline.definitions import build_definitions
from analytics_pipeline.defs.ingest import LOOP_JOB_NAME
from analytics_pipeline.settings import Settings

SNAPSHOT = Path(__file__).with_name("asset_specs.snapshot.json")


def _definitions(**env: str) -> dg.Definitions:
    # A fixed start: the snapshot must not depend on the day (nor write a state file).
    return build_definitions(Settings.from_env({"ANALYTICS_PARTITION_START": "2026-11-01", **env}))


def _spec_snapshot(defs: dg.Definitions) -> dict[str, dict]:
    graph = defs.resolve_asset_graph()
    snapshot = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        condition = node.automation_condition
        metadata = node.metadata
        schema = metadata.get("dagster/column_schema")
        snapshot[key.to_user_string()] = {
            "deps": sorted(dep.to_user_string() for dep in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": type(node.partitions_def).__name__ if node.partitions_def else None,
            "automation_condition": condition.get_label() if condition else None,
            "checks": sorted(check.name for check in node.check_keys),
            "is_external": not node.is_materializable,
            "owners": list(node.owners),
            "tags": dict(node.tags),
            "metadata_keys": sorted(metadata),
            "table_name": metadata.get("dagster/table_name"),
            "columns": [column.name for column in schema.columns] if schema else None,
        }
    return snapshot


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(_definitions())


def test_asset_specs_match_snapshot() -> None:
    """An accidental change to the asset graph shows up here; UPDATE_SNAPSHOTS=1 rewrites it."""
    current = _spec_snapshot(_definitions())
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_lineage_runs_stream_queue_events_aggregates() -> None:
    graph = _definitions().resolve_asset_graph()
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents["sqs_batch_queue"] == {"kinesis_stream"}
    assert parents["events"] == {"sqs_batch_queue"}
    assert parents["events_quarantine"] == {"sqs_batch_queue"}
    assert parents["daily_event_counts"] == {"events"}
    assert parents["daily_active_users"] == {"events"}


def test_sensors_start_running() -> None:
    defs = _definitions()
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert set(sensors) == {
        "sqs_batches_sensor",
        "cooldown_automation",
        "queue_health_sensor",
        "table_row_counts_sensor",
        "run_failure_alert",
    }
    for sensor in sensors.values():
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_load_loop_runs_in_process() -> None:
    job = _definitions().resolve_job_def(LOOP_JOB_NAME)
    assert job.executor_def.name == "in_process"


def test_today_and_tomorrow_are_partitions() -> None:
    from datetime import UTC, datetime, timedelta

    from analytics_pipeline.defs.partitions import day_partitions

    partitions = day_partitions(Settings.from_env({}))
    keys = partitions.get_partition_keys()
    today = datetime.now(UTC).date()
    assert today.isoformat() in keys
    assert (today + timedelta(days=1)).isoformat() in keys
