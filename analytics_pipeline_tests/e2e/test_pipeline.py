"""The whole local path for real: SDK clients -> moto Kinesis (HTTP) -> trigger poller process ->
Lambda handler -> moto SQS/S3 -> `dagster dev` (sensor, load runs, automation) -> warehouse.

Traffic mixes gzip and plain blobs, skewed client clocks, duplicates resent in other blobs and
other Kinesis records, and invalid events; the test ends only when every valid messageId is in
`events` exactly once, every invalid event is in `events_quarantine` with its reason, and the
queue is empty.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics_pipeline import aws
from analytics_pipeline.client import Client
from analytics_pipeline.defs.ingest.loop import LOOP_TAG
from analytics_pipeline.loader import BatchQueue
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline.warehouse.base import Warehouse
from analytics_pipeline_testkit.environments import BigQueryEndpoint
from analytics_pipeline_testkit.processes import (
    DagsterDev,
    running_stack,
    wait_for,
    wait_showing_logs,
)

pytestmark = pytest.mark.e2e

WAREHOUSES = ["duckdb", "bigquery"]


@dataclass
class Traffic:
    valid: set[str] = field(default_factory=set)
    invalid: dict[str, str] = field(default_factory=dict)  # messageId -> expected reason
    blob_rejections: int = 0
    skewed: dict[str, timedelta] = field(default_factory=dict)  # messageId -> sentAt - original


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(message_id: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "track",
        "event": "Video Recorded",
        "messageId": message_id,
        "anonymousId": "device-e2e",
        "originalTimestamp": _iso(datetime.now(UTC)),
        "properties": {"duration_ms": 5400, "filters": ["sepia", "grain"]},
    }
    base.update(fields)
    return base


def _blob(events: list[dict[str, object]], sent_at: datetime, compress: bool) -> bytes:
    payload = json.dumps(
        {
            "sentAt": _iso(sent_at),
            "context": {"app": {"name": "e2e", "version": "1.0"}, "library": {"name": "test"}},
            "batch": events,
        }
    ).encode()
    return gzip.compress(payload) if compress else payload


def send_traffic(settings: Settings) -> Traffic:
    traffic = Traffic()
    kinesis = aws.client("kinesis", settings)

    # Several SDK clients, gzip and plain.
    for number, use_gzip in enumerate([True, True, False]):
        client = Client(
            settings.stream_name,
            kinesis=kinesis,
            gzip=use_gzip,
            flush_at=20,
            context={"device": {"id": f"device-{number}"}},
        )
        for i in range(45):
            traffic.valid.add(
                client.track(
                    "Feed Scrolled",
                    {"position": i, "nested": {"depth": [1, 2, {"x": "y"}]}},
                    anonymous_id=f"device-{number}",
                    user_id=f"user-{number}" if i % 3 == 0 else None,
                )
            )
        traffic.valid.add(client.screen("Feed", anonymous_id=f"device-{number}"))
        traffic.valid.add(client.identify(f"user-{number}", traits={"plan": "pro"}))
        client.close()

    now = datetime.now(UTC)

    # A client whose clock runs two hours ahead: the correction must pull it back.
    skewed_events = []
    for i in range(5):
        message_id = f"skew-{uuid.uuid4()}"
        original = now + timedelta(hours=2) - timedelta(seconds=30 - i)
        skewed_events.append(_event(message_id, originalTimestamp=_iso(original)))
        traffic.valid.add(message_id)
        traffic.skewed[message_id] = (now + timedelta(hours=2)) - original
    kinesis.put_record(
        StreamName=settings.stream_name,
        Data=_blob(skewed_events, now + timedelta(hours=2), compress=True),
        PartitionKey="skewed-device",
    )

    # Resends: the same messageIds in a second blob, in another record, on another partition key,
    # and the very same blob put twice (a lost acknowledgement).
    first, second, third = (f"dup-{uuid.uuid4()}" for _ in range(3))
    blob_one = _blob([_event(first), _event(second)], now, compress=True)
    blob_two = _blob([_event(second), _event(third)], now, compress=False)
    for data, key in ((blob_one, "dup-a"), (blob_two, "dup-b"), (blob_one, "dup-c")):
        kinesis.put_record(StreamName=settings.stream_name, Data=data, PartitionKey=key)
    traffic.valid |= {first, second, third}

    # Invalid events, rejected one by one beside a valid sibling.
    invalid = {
        f"bad-type-{uuid.uuid4()}": ("invalid_type", {"type": "purchase"}),
        f"bad-name-{uuid.uuid4()}": ("missing_event_name", {"event": None}),
        f"bad-id-{uuid.uuid4()}": ("missing_identity", {"anonymousId": None}),
        f"bad-field-{uuid.uuid4()}": ("invalid_field_type", {"userId": 12345}),
        f"bad-time-{uuid.uuid4()}": ("invalid_timestamp", {"originalTimestamp": "yesterday"}),
    }
    sibling = f"sibling-{uuid.uuid4()}"
    events = [_event(sibling)] + [
        {key: value for key, value in _event(message_id, **changes).items() if value is not None}
        for message_id, (_, changes) in invalid.items()
    ]
    kinesis.put_record(
        StreamName=settings.stream_name, Data=_blob(events, now, True), PartitionKey="bad"
    )
    traffic.valid.add(sibling)
    traffic.invalid = {message_id: reason for message_id, (reason, _) in invalid.items()}

    # A blob that is not JSON at all.
    kinesis.put_record(
        StreamName=settings.stream_name, Data=b"\x00not json{", PartitionKey="garbage"
    )
    traffic.blob_rejections = 1
    return traffic


@pytest.fixture(params=WAREHOUSES)
def e2e_settings(request: pytest.FixtureRequest, aws_endpoint: str, tmp_path: Path) -> Settings:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    warehouse_env: dict[str, str] = {}
    if request.param == "bigquery":
        # The scenario's SQL names `analytics.<table>`: the one test on the session's emulator
        # that uses the default dataset.
        endpoint: BigQueryEndpoint = request.getfixturevalue("bigquery_endpoint")
        warehouse_env = endpoint.settings_env("analytics")
    settings = Settings.from_env(
        {
            **warehouse_env,
            "AWS_ENDPOINT_URL": aws_endpoint,
            "ANALYTICS_STREAM_NAME": name,
            "ANALYTICS_QUEUE_NAME": name,
            "ANALYTICS_BUCKET": name,
            "ANALYTICS_WAREHOUSE": request.param,
            "ANALYTICS_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
            "ANALYTICS_STATE_DIR": str(tmp_path / "state"),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "ANALYTICS_SENSOR_INTERVAL_SECONDS": "5",
            "ANALYTICS_DUPLICATE_CHECK_CRON": "* * * * *",
        }
    )
    settings.state_dir.mkdir(parents=True)
    ensure_resources(settings)
    return settings


@pytest.fixture
def stack(e2e_settings: Settings) -> Iterator[tuple[ChildProcess, DagsterDev]]:
    with running_stack(e2e_settings) as processes:
        yield processes


def wait_all_loaded(
    settings: Settings,
    traffic: Traffic,
    warehouse: Warehouse,
    processes: tuple[ChildProcess, ...],
) -> None:
    """Until the warehouse holds every event of `traffic` and each rejection, and the queue is
    empty; fails early if the trigger (`processes[0]`) dies."""
    trigger = processes[0]
    expected = (len(traffic.valid), len(traffic.invalid) + traffic.blob_rejections)
    queue = BatchQueue.for_settings(settings)

    def loaded() -> tuple[int, int] | None:
        assert trigger.alive(), trigger.tail()
        try:
            counts = warehouse.table_row_counts()
        except Exception:  # tables not created yet, or the loader holds the file right now
            return None
        seen = (counts.get("events", 0), counts.get("events_quarantine", 0))
        return seen if seen == expected and not any(queue.depth().values()) else None

    wait_showing_logs(processes, loaded, 240, what="every event loaded and the queue empty")


def test_events_flow_exactly_once_from_clients_to_the_warehouse(
    e2e_settings: Settings, stack: tuple[ChildProcess, DagsterDev]
) -> None:
    dagster = stack[1]
    settings = e2e_settings
    traffic = send_traffic(settings)
    warehouse = open_warehouse(settings)
    wait_all_loaded(settings, traffic, warehouse, stack)

    events = warehouse.query(
        "SELECT message_id, count(*) FROM analytics.events GROUP BY message_id"
    )
    counts = dict(events.rows)
    assert set(counts) == traffic.valid
    assert set(counts.values()) == {1}

    quarantine = warehouse.query(
        "SELECT message_id, reason FROM analytics.events_quarantine WHERE message_id IS NOT NULL"
    )
    assert dict(quarantine.rows) == traffic.invalid
    blob_level = warehouse.query(
        "SELECT reason FROM analytics.events_quarantine WHERE message_id IS NULL"
    )
    assert [row[0] for row in blob_level.rows] == ["blob_not_json"]

    # Skew correction: timestamp = received_at - (sent_at - original_timestamp).
    skewed = warehouse.query(
        "SELECT message_id, timestamp, original_timestamp, sent_at, received_at "
        "FROM analytics.events WHERE message_id LIKE 'skew-%'"
    )
    assert len(skewed.rows) == len(traffic.skewed)
    for message_id, timestamp, original, sent_at, received_at in skewed.rows:
        assert sent_at - original == traffic.skewed[message_id]
        assert timestamp == received_at - (sent_at - original)
        assert abs(timestamp - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=5)

    _assert_dagster_view(dagster, settings, warehouse, len(traffic.valid))


def _assert_dagster_view(dagster: DagsterDev, settings: Settings, warehouse, events: int) -> None:
    graph = dagster.graphql("{ assetNodes { assetKey { path } dependencyKeys { path } } }")
    parents = {
        "/".join(node["assetKey"]["path"]): {
            "/".join(dep["path"]) for dep in node["dependencyKeys"]
        }
        for node in graph["assetNodes"]
    }
    assert parents["sqs_batch_queue"] == {"kinesis_stream"}
    assert parents["events"] == {"sqs_batch_queue"}
    assert parents["daily_event_counts"] == {"events"}
    assert parents["daily_active_users"] == {"events"}

    sensors = dagster.graphql(
        """{ sensorsOrError(repositorySelector: {repositoryName: "__repository__",
              repositoryLocationName: "analytics_pipeline"}) {
              ... on Sensors { results { name sensorState { status } } } } }"""
    )
    states = {s["name"]: s["sensorState"]["status"] for s in sensors["sensorsOrError"]["results"]}
    assert states == dict.fromkeys(
        (
            "sqs_batches_sensor",
            "cooldown_automation",
            "queue_health_sensor",
            "table_row_counts_sensor",
            "run_failure_alert",
        ),
        "RUNNING",
    )

    runs = dagster.graphql(
        "{ runsOrError(limit: 200) { ... on Runs { results { runId jobName status "
        "tags { key value } } } } }"
    )["runsOrError"]["results"]
    loops = [run for run in runs if run["jobName"] == "events_loop_job"]
    assert [run["status"] for run in loops] == ["STARTED"], runs  # one loop, alive
    # tagged with its queue: the sensor keeps this queue's loop only
    assert {"key": LOOP_TAG, "value": settings.queue_name} in loops[0]["tags"]
    assert not [run for run in runs if run["status"] == "FAILURE"], runs

    # Every micro-batch is a materialization of its day, from the loop run, with its metadata.
    today = datetime.now(UTC).date()
    history = dagster.graphql(
        """{ assetNodes(assetKeys: [{path: ["events"]}, {path: ["daily_event_counts"]}]) {
              assetKey { path }
              assetMaterializations(limit: 50) { partition runId
                metadataEntries { label } } } }"""
    )["assetNodes"]
    by_asset = {"/".join(node["assetKey"]["path"]): node for node in history}
    events_history = by_asset["events"]["assetMaterializations"]
    assert {m["partition"] for m in events_history} >= {today.isoformat()}
    assert {m["runId"] for m in events_history} == {loops[0]["runId"]}
    labels = {entry["label"] for entry in events_history[0]["metadataEntries"]}
    assert {"rows_loaded", "duplicates_skipped", "seconds_from_sent_at_p50"} <= labels
    assert by_asset["daily_event_counts"]["assetMaterializations"]  # kept by the same loads

    # The aggregates are current with the events, incrementally, with no refresh run.
    result = warehouse.query(
        "SELECT coalesce(sum(events), 0) FROM analytics.daily_event_counts WHERE day = ?",
        [today],
    )
    in_events = warehouse.query(
        "SELECT count(*) FROM analytics.events WHERE CAST(timestamp AS DATE) = ?", [today]
    )
    assert result.rows[0][0] == in_events.rows[0][0] > 0

    def duplicate_check_passed() -> bool:
        checks = dagster.graphql(
            """{ assetNodes(assetKeys: [{path: ["events"]}]) { assetChecksOrError {
                  ... on AssetChecks { checks { name executionForLatestMaterialization {
                      status } } } } } }"""
        )["assetNodes"][0]["assetChecksOrError"]["checks"]
        status = {
            c["name"]: (c["executionForLatestMaterialization"] or {}).get("status") for c in checks
        }
        assert status.get("no_duplicate_message_ids") != "FAILED", status
        return status.get("no_duplicate_message_ids") == "SUCCEEDED"

    wait_for(duplicate_check_passed, timeout=150, interval=3, what="no_duplicate_message_ids ran")
    active = warehouse.query(
        "SELECT active_users FROM analytics.daily_active_users WHERE day = ?", [today]
    )
    assert active.rows and active.rows[0][0] > 0
    assert events > 0
