"""Loading SQS batches exactly once, with real loader processes killed between the steps of a
load, on both warehouses (DuckDB, and the BigQuery emulator), against the AWS emulator.

A load is: prepare (rows written invisibly) -> intent in the store -> commit -> record (keys and
ledger in the store) -> delete from SQS. A loader SIGKILLed after any of these, followed by a
fresh one, must leave every valid event exactly once and every rejected one in quarantine.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics_pipeline import aws
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.ingest.handler import build_handler
from analytics_pipeline.loader import BatchQueue, LoaderStore
from analytics_pipeline.loader.loop import open_loader, run_loop
from analytics_pipeline.loader.rebuild import rebuild_store
from analytics_pipeline.local.processes import ChildProcess
from analytics_pipeline.local.stack import child_env
from analytics_pipeline.local.trigger import KinesisTrigger, kinesis_event_record
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import open_warehouse
from analytics_pipeline_testkit.crashing_loader import KILL_POINTS, reports_in
from analytics_pipeline_testkit.environments import BigQueryEndpoint
from analytics_pipeline_testkit.traffic import (
    Traffic,
    blob,
    iso,
    put_mixed_traffic,
    read_stream,
    track_event,
)


@pytest.fixture(params=["duckdb", "bigquery"])
def settings(request: pytest.FixtureRequest, new_pipeline: Callable[..., Settings]) -> Settings:
    warehouse: dict[str, str] = {}
    if request.param == "bigquery":
        endpoint: BigQueryEndpoint = request.getfixturevalue("bigquery_endpoint")
        warehouse = endpoint.settings_env(f"load_{uuid.uuid4().hex[:10]}")
    return new_pipeline(ANALYTICS_SQS_VISIBILITY_SECONDS="5", **warehouse)


def fill_queue(settings: Settings, blobs: int = 9) -> Traffic:
    traffic = put_mixed_traffic(settings, blobs=blobs)
    KinesisTrigger(settings).run_until_idle(timeout=60)
    return traffic


def loader_process(settings: Settings, tmp_path: Path, kill_at: str) -> ChildProcess:
    command = [sys.executable, "-m", "analytics_pipeline_testkit.crashing_loader"]
    return ChildProcess(
        f"loader-{kill_at}",
        [*command, "--kill-at", kill_at],
        tmp_path / f"loader-{kill_at}.log",
        child_env(settings),
    ).start()


def assert_each_once(settings: Settings, traffic: Traffic) -> None:
    warehouse = open_warehouse(settings)
    events = warehouse.query(
        f"SELECT message_id, count(*) FROM {events_table(settings)} GROUP BY message_id"
    ).rows
    assert sorted(message_id for message_id, _ in events) == sorted(set(traffic.valid))
    assert {count for _, count in events} == {1}
    counts = warehouse.table_row_counts()
    assert counts["events_quarantine"] == len(traffic.invalid) + traffic.garbage_blobs
    assert BatchQueue.for_settings(settings).depth() == {"visible": 0, "in_flight": 0}


def events_table(settings: Settings) -> str:
    return table(settings, "events")


def table(settings: Settings, name: str) -> str:
    if settings.warehouse == "bigquery":
        return f"`{settings.bigquery_project}.{settings.bigquery_dataset}.{name}`"
    return f"analytics.{name}"


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_loader_killed_between_any_two_steps_loses_nothing_and_doubles_nothing(
    settings: Settings, tmp_path: Path, kill_at: str
) -> None:
    traffic = fill_queue(settings)

    crashing = loader_process(settings, tmp_path, kill_at)
    assert crashing.popen is not None
    code = crashing.popen.wait(timeout=120)
    log = crashing.tail()
    crashing.stop()
    if kill_at == "mid_commit" and settings.warehouse == "duckdb":
        assert code == 0, log  # one transaction: there is no middle of a DuckDB commit
    else:
        assert code == -9 and f"killed at {kill_at}" in log, log

    survivor = loader_process(settings, tmp_path, "none")
    assert survivor.popen is not None
    assert survivor.popen.wait(timeout=120) == 0, survivor.tail()
    survivor.stop()

    assert_each_once(settings, traffic)
    with LoaderStore.open(settings.loader_store_dir, retention_days=31) as store:
        assert store.pending() == []  # every intent finished or abandoned
        assert store.unreported() == []  # and every committed load reported

    # What the two loaders reported adds up to what is loaded, each load once: a load the
    # crashed one committed is reported by the survivor, marked recovered.
    reports = reports_in(crashing.log_path.read_text()) + reports_in(survivor.log_path.read_text())
    load_ids = [load_id for report in reports for load_id in report["load_ids"]]
    assert len(load_ids) == len(set(load_ids)), reports
    inserted = Counter()
    for report in reports:
        inserted.update(report["inserted"])
    counts = open_warehouse(settings).table_row_counts()
    assert inserted["events"] == counts["events"], reports
    assert inserted["quarantine"] == counts["events_quarantine"], reports
    recovered = [report for report in reports if report["recovered"]]
    # Committed, or rolled forward by the survivor (BigQuery's finalized streams of a recorded
    # intent), then reported by the survivor; an uncommitted DuckDB transaction is gone.
    rolled_forward = ("after_intent", "mid_commit") if settings.warehouse == "bigquery" else ()
    if kill_at in ("after_commit", "after_record", *rolled_forward):
        assert recovered, reports
    else:
        assert not recovered, reports


def test_two_loaders_at_once_load_each_event_once(settings: Settings, tmp_path: Path) -> None:
    """A second loader on the same queue waits for the store: the two never load together."""
    traffic = fill_queue(settings)

    first = loader_process(settings, tmp_path, "none")
    second = ChildProcess(
        "loader-2",
        [sys.executable, "-m", "analytics_pipeline_testkit.crashing_loader"],
        tmp_path / "loader-2.log",
        child_env(settings),
    ).start()
    for process in (first, second):
        assert process.popen is not None
        assert process.popen.wait(timeout=180) == 0, process.tail()
        process.stop()

    assert_each_once(settings, traffic)


def test_the_loop_loads_what_arrives_and_reports_per_day(settings: Settings) -> None:
    traffic = fill_queue(settings)

    with open_loader(settings) as loader:
        outcomes = list(run_loop(loader, settings, seconds=3))
        later = fill_queue(settings, blobs=3)  # more after the first loads
        outcomes += list(run_loop(loader, settings, seconds=3))

    assert outcomes and all(outcome.messages for outcome in outcomes)
    inserted = sum(o.result(BatchKind.EVENTS).rows_inserted for o in outcomes)
    assert inserted == len(set(traffic.valid)) + len(set(later.valid))
    days = set().union(*(o.days.get(BatchKind.EVENTS, set()) for o in outcomes))
    assert len(days) == 2  # the traffic's events are stamped today and yesterday
    traffic.valid += later.valid
    traffic.invalid += later.invalid
    # the same garbage bytes again: one quarantine row (its id is its content)
    assert_each_once(settings, traffic)


def test_a_store_lost_while_the_warehouse_has_loads_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    fill_queue(settings, blobs=2)
    with open_loader(settings) as loader:
        list(run_loop(loader, settings, seconds=2))
    lost = Settings.from_env({**settings.to_env(), "ANALYTICS_LOADER_STATE_DIR": str(tmp_path)})

    with pytest.raises(Exception, match="rebuild"), open_loader(lost):
        pass


def test_a_rebuilt_store_drops_resends_and_keeps_the_aggregates_exact(
    settings: Settings, tmp_path: Path
) -> None:
    """The store's disk is lost; `loader rebuild` reads the keys back from the warehouse, and
    resends of loaded events (and their users) are then neither inserted nor counted again."""
    now = datetime.now(UTC)
    first = [{**track_event(at=now), "anonymousId": f"u{n}"} for n in range(4)]
    kinesis = aws.client("kinesis", settings)

    def load_blob(events: list[dict], loader_settings: Settings) -> None:
        kinesis.put_record(StreamName=settings.stream_name, Data=blob(events), PartitionKey="d")
        KinesisTrigger(settings).run_until_idle(timeout=60)
        with open_loader(loader_settings) as loader:
            list(run_loop(loader, loader_settings, seconds=2))

    load_blob(first, settings)
    lost = Settings.from_env({**settings.to_env(), "ANALYTICS_LOADER_STATE_DIR": str(tmp_path)})

    counts = rebuild_store(lost)

    assert counts == {"event": 4, "quarantine": 0, "batch": 1}
    fresh = [{**track_event(at=now), "anonymousId": user} for user in ("u0", "u9")]
    load_blob([*first[:2], *fresh], lost)
    warehouse = open_warehouse(settings)
    loaded = warehouse.query(
        f"SELECT message_id, count(*) FROM {events_table(settings)} GROUP BY message_id"
    ).rows
    assert sorted(loaded) == sorted((e["messageId"], 1) for e in [*first, *fresh])
    dau = warehouse.query(
        f"SELECT active_users, anonymous_users FROM {table(settings, 'daily_active_users')} "
        "WHERE day = ?",
        [now.date()],
    ).rows
    assert [tuple(int(v) for v in row) for row in dau] == [(5, 5)]  # u0..u3 and u9, once each
    video = warehouse.query(
        f"SELECT events, users FROM {table(settings, 'daily_event_counts')} "
        "WHERE day = ? AND event = 'Video Recorded'",
        [now.date()],
    ).rows
    assert [tuple(int(v) for v in row) for row in video] == [(6, 5)]


def test_resends_and_a_lambda_retry_with_other_batch_boundaries_load_each_event_once(
    settings: Settings,
) -> None:
    """Client resends seconds, hours and days apart, one after a device clock change, and a
    Lambda retry that packs the same records into other batches: every messageId once."""
    now = datetime.now(UTC)
    first = [track_event(f"a{n}-{uuid.uuid4().hex[:6]}", at=now) for n in range(5)]
    fresh = [track_event(f"n{n}-{uuid.uuid4().hex[:6]}", at=now) for n in range(3)]
    kinesis = aws.client("kinesis", settings)

    def put(data: bytes) -> None:
        kinesis.put_record(StreamName=settings.stream_name, Data=data, PartitionKey="d")

    put(blob(first, sent_at=now))
    KinesisTrigger(settings).run_until_idle(timeout=60)
    with open_loader(settings) as loader:
        list(run_loop(loader, settings, seconds=2))

    moved = {**first[4], "originalTimestamp": iso(now - timedelta(days=8))}  # clock changed
    put(blob([first[0], first[1], fresh[0]], sent_at=now + timedelta(seconds=5)))
    put(blob([first[2], fresh[1]], sent_at=now + timedelta(hours=3)))
    put(blob([first[3], fresh[2]], sent_at=now + timedelta(days=2), gzipped=True))
    put(blob([moved], sent_at=now))
    trigger = KinesisTrigger(settings)
    trigger.run_until_idle(timeout=60)
    # The Lambda retried: every record of the stream again, in one invocation, so in batches
    # of other boundaries (and other ids) than the first time.
    records = read_stream(kinesis, settings.stream_name)
    event = {
        "Records": [
            kinesis_event_record(
                {
                    "SequenceNumber": str(1000 + index),
                    "PartitionKey": record.partition_key,
                    "Data": record.data,
                    "ApproximateArrivalTimestamp": record.arrived_at,
                },
                record.shard_id,
                trigger.stream_arn,
                settings.aws_region,
            )
            for index, record in enumerate(records)
        ]
    }
    assert build_handler(settings)(event, None)["batchItemFailures"] == []
    with open_loader(settings) as loader:
        outcomes = list(run_loop(loader, settings, seconds=3))

    assert sum(o.result(BatchKind.EVENTS).rows_inserted for o in outcomes) == len(fresh)
    ids = [e["messageId"] for e in [*first, *fresh]]
    loaded = (
        open_warehouse(settings)
        .query(f"SELECT message_id, count(*) FROM {events_table(settings)} GROUP BY message_id")
        .rows
    )
    assert sorted(loaded) == sorted((message_id, 1) for message_id in ids)
