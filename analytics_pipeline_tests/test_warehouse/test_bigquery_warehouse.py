"""BigQueryWarehouse against the real emulator (REST + Storage Write API over gRPC).

The semantics tests run on both warehouses through the `Warehouse` protocol only, so BigQuery is
held to exactly what DuckDB does; the BigQuery-only tests check table layout, schema evolution,
staging clean-up, concurrent loads and the read-only `query`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google.cloud import bigquery

from analytics_pipeline.cli import main as cli_main
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.contract.rows import EventRow
from analytics_pipeline.defs.bigquery_resource import BigQueryWarehouseResource
from analytics_pipeline.defs.resources import warehouse_resource
from analytics_pipeline.local.bigquery_emulator import (
    ensure_bigquery_emulator,
    grpc_accepts,
    rest_answers,
)
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import DuckDBWarehouse, Warehouse, warehouse_from_settings
from analytics_pipeline.warehouse import bigquery as bigquery_module
from analytics_pipeline.warehouse.bigquery import (
    FENCE_TABLE,
    STAGING_PREFIX,
    TABLE_LAYOUTS,
    BigQueryConfig,
    BigQueryWarehouse,
)
from analytics_pipeline.warehouse.duckdb import TABLE_COLUMNS
from analytics_pipeline_tests.conftest import BigQueryEndpoint, free_port
from analytics_pipeline_tests.test_warehouse.builders import NOON, event, quarantined, staged


def _bigquery(endpoint: BigQueryEndpoint, **overrides: Any) -> BigQueryWarehouse:
    config = BigQueryConfig(
        project=endpoint.project,
        dataset=f"t_{uuid.uuid4().hex[:12]}",
        emulator_rest=endpoint.rest,
        emulator_grpc=endpoint.grpc,
        **overrides,
    )
    return BigQueryWarehouse(config)


@pytest.fixture
def bigquery_warehouse(bigquery_endpoint: BigQueryEndpoint) -> BigQueryWarehouse:
    return _bigquery(bigquery_endpoint)


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    if request.param == "duckdb":
        return DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    return _bigquery(request.getfixturevalue("bigquery_endpoint"))


def table(warehouse: Warehouse, name: str) -> str:
    if isinstance(warehouse, BigQueryWarehouse):
        return f"`{warehouse.table_id(name)}`"
    return f"analytics.{name}"


def events_by_id(warehouse: Warehouse) -> dict[str, dict[str, object]]:
    result = warehouse.query(f"SELECT * FROM {table(warehouse, 'events')}")
    return {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}


# -- the same semantics on both warehouses --------------------------------------------------


def test_load_stores_utc_timestamps_and_json_text(warehouse: Warehouse) -> None:
    properties = {"nested": {"list": [1, 2.5, "x", None], "flag": True}, "unicode": "día"}
    row = event("m-utc", properties=properties, user_id="u-9")
    batch = staged([row])
    before = datetime.now(UTC).replace(tzinfo=None)

    result = warehouse.load_batches([batch], dedupe_window_days=7)

    stored = events_by_id(warehouse)["m-utc"]
    assert stored["timestamp"] == NOON.replace(tzinfo=None)
    assert stored["received_at"] == row.received_at.replace(tzinfo=None)
    assert stored["user_id"] == "u-9"
    assert stored["batch_id"] == batch.batch_id  # filled from the staged batch when absent
    assert stored["context"] is None  # JSON null arrives as SQL NULL
    assert isinstance(stored["properties"], str)
    assert json.loads(stored["properties"]) == properties
    assert before <= stored["loaded_at"] <= datetime.now(UTC).replace(tzinfo=None)
    assert result.rows_inserted == 1 and result.reconciles
    assert result.loaded_batch_ids == [batch.batch_id]


def test_same_batch_twice_is_skipped_by_the_ledger(warehouse: Warehouse) -> None:
    batch = staged([event("m-1"), event("m-2")])

    first = warehouse.load_batches([batch], dedupe_window_days=7)
    second = warehouse.load_batches([batch, batch], dedupe_window_days=7)

    assert (first.batches, first.batches_already_loaded, first.rows_inserted) == (1, 0, 2)
    assert (second.batches, second.batches_already_loaded, second.rows_received) == (1, 1, 0)
    assert second.loaded_batch_ids == [] and second.reconciles
    assert warehouse.loaded_batch_ids([batch.batch_id, "other"]) == {batch.batch_id}
    assert warehouse.table_row_counts()["events"] == 2


def test_duplicates_across_and_within_loads_keep_the_earliest_copy(warehouse: Warehouse) -> None:
    warehouse.load_batches([staged([event("m-0")])], dedupe_window_days=7)
    early, late = NOON + timedelta(seconds=2), NOON + timedelta(seconds=9)
    batch_a = staged([event("m-1", received_at=late), event("m-2"), event("m-2"), event("m-0")])
    batch_b = staged([event("m-1", received_at=early), event("m-3")])

    result = warehouse.load_batches([batch_a, batch_b], dedupe_window_days=7)

    assert (result.rows_received, result.rows_inserted, result.duplicates_skipped) == (6, 3, 3)
    assert result.reconciles
    stored = events_by_id(warehouse)
    assert sorted(stored) == ["m-0", "m-1", "m-2", "m-3"]
    assert stored["m-1"]["received_at"] == early.replace(tzinfo=None)
    assert stored["m-1"]["batch_id"] == batch_b.batch_id
    assert warehouse.duplicate_message_ids(NOON.date()) == []
    ledger = warehouse.query(
        f"SELECT batch_id, rows_declared, rows_inserted, duplicates_skipped "
        f"FROM {table(warehouse, 'loaded_batches')} WHERE batch_id = ?",
        [batch_a.batch_id],
    )
    assert ledger.rows == [(batch_a.batch_id, 4, 1, 3)]


def test_a_message_id_resent_days_later_is_skipped_within_the_window(warehouse: Warehouse) -> None:
    warehouse.load_batches([staged([event("m-old")])], dedupe_window_days=7)
    replay = event("m-old", timestamp=NOON + timedelta(days=5))
    far_replay = event("m-old", timestamp=NOON + timedelta(days=10))

    within = warehouse.load_batches([staged([replay], batch_id="b-5")], dedupe_window_days=7)
    outside = warehouse.load_batches([staged([far_replay], batch_id="b-10")], dedupe_window_days=7)

    assert (within.rows_inserted, within.duplicates_skipped) == (0, 1)
    # Further back than the window the copy is not seen: the documented trade-off.
    assert (outside.rows_inserted, outside.duplicates_skipped) == (1, 0)
    counted = warehouse.query(
        f"SELECT count(*) FROM {table(warehouse, 'events')} WHERE message_id = ?", ["m-old"]
    )
    assert counted.rows == [(2,)]


def test_latency_from_sent_at_is_measured_on_inserted_rows(warehouse: Warehouse) -> None:
    now = datetime.now(UTC)
    ages = [30.0, 10.0, 20.0]
    rows = [
        event(f"m-{i}", timestamp=now, received_at=now, sent_at=now - timedelta(seconds=age))
        for i, age in enumerate(ages)
    ]

    result = warehouse.load_batches([staged(rows)], dedupe_window_days=7)

    assert result.seconds_from_sent_at_p50 is not None
    assert result.seconds_from_sent_at_max is not None
    assert 20.0 <= result.seconds_from_sent_at_p50 < 20.0 + 5
    assert max(ages) <= result.seconds_from_sent_at_max < max(ages) + 5


def test_empty_batch_and_declared_count_mismatch(warehouse: Warehouse) -> None:
    empty = staged([], batch_id="empty", day="2026-11-29")
    short = staged([event("m-1"), event("m-2")], row_count=3)

    loaded_empty = warehouse.load_batches([empty], dedupe_window_days=7)
    loaded_short = warehouse.load_batches([short], dedupe_window_days=7)

    assert loaded_empty.loaded_batch_ids == ["empty"] and loaded_empty.reconciles
    assert warehouse.loaded_batch_ids(["empty"]) == {"empty"}
    assert (loaded_short.rows_declared, loaded_short.rows_received) == (3, 2)
    assert not loaded_short.reconciles


def test_quarantine_loads_once_and_replays_once(warehouse: Warehouse) -> None:
    first = staged([quarantined("q-1"), quarantined("q-2")], kind=BatchKind.QUARANTINE)
    again = staged([quarantined("q-2"), quarantined("q-3")], kind=BatchKind.QUARANTINE)

    one = warehouse.load_batches([first], dedupe_window_days=7)
    two = warehouse.load_batches([again, first], dedupe_window_days=7)

    assert one.rows_inserted == 2 and one.reconciles
    assert two.batches_already_loaded == 1
    assert (two.rows_received, two.rows_inserted, two.duplicates_skipped) == (2, 1, 1)
    assert two.seconds_from_sent_at_p50 is None
    waiting = warehouse.quarantined("invalid_event")
    assert [row.quarantine_id for row in waiting] == ["q-1", "q-2", "q-3"]
    assert waiting[0].received_at == NOON
    assert warehouse.mark_quarantine_replayed(["q-1", "q-3"]) == 2
    assert warehouse.mark_quarantine_replayed(["q-1"]) == 0
    assert [row.quarantine_id for row in warehouse.quarantined("invalid_event")] == ["q-2"]
    assert warehouse.table_row_counts()["events"] == 0


def test_batches_of_different_kinds_are_refused(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="one kind"):
        warehouse.load_batches(
            [staged([event("m-1")]), staged([quarantined("q-1")], kind=BatchKind.QUARANTINE)],
            dedupe_window_days=7,
        )


def known_dataset() -> list[EventRow]:
    """Two UTC days (one event just before midnight), identified and anonymous users."""
    rows = []
    for index in range(24):
        moment = NOON + timedelta(minutes=index) if index % 4 else NOON + timedelta(days=1)
        rows.append(
            event(
                f"m-{index}",
                timestamp=moment,
                type="screen" if index % 5 == 0 else "track",
                name=("Feed" if index % 5 == 0 else ("Liked", "Shared")[index % 2]),
                user_id=f"u-{index % 4}" if index % 3 == 0 else None,
                anonymous_id=f"a-{index % 7}",
            )
        )
    rows.append(event("m-late", timestamp=datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)))
    return rows


def test_daily_aggregates_match_the_events(warehouse: Warehouse) -> None:
    rows = known_dataset()
    warehouse.load_batches([staged(rows)], dedupe_window_days=7)
    day = NOON.date()
    of_day = [row for row in rows if row.timestamp.date() == day]
    expected: dict[tuple[str, str | None], tuple[int, set[str | None]]] = {}
    for row in of_day:
        count, users = expected.get((row.type, row.event), (0, set()))
        users.add(row.user_id or row.anonymous_id)
        expected[(row.type, row.event)] = (count + 1, users)

    written = warehouse.refresh_daily_event_counts(day)
    written_again = warehouse.refresh_daily_event_counts(day)
    dau_written = warehouse.refresh_daily_active_users(day)

    assert written == written_again == len(expected)
    counts = warehouse.query(
        f"SELECT type, event, events, users FROM {table(warehouse, 'daily_event_counts')} "
        "WHERE day = ?",
        [day],
    )
    assert {(t, e): (n, u) for t, e, n, u in counts.rows} == {
        key: (count, len(users)) for key, (count, users) in expected.items()
    }
    assert dau_written == 1
    dau = warehouse.query(
        "SELECT active_users, identified_users, anonymous_users "
        f"FROM {table(warehouse, 'daily_active_users')}"
    )
    assert dau.rows == [
        (
            len({row.user_id or row.anonymous_id for row in of_day}),
            len({row.user_id for row in of_day if row.user_id}),
            len({row.anonymous_id for row in of_day if not row.user_id}),
        )
    ]
    assert warehouse.refresh_daily_active_users(day + timedelta(days=5)) == 0
    assert warehouse.table_row_counts()["daily_active_users"] == 1


def test_last_loads_newest_first_and_row_counts(warehouse: Warehouse) -> None:
    for i in range(3):
        warehouse.load_batches([staged([event(f"m-{i}")], batch_id=f"b-{i}")], 7)

    loads = warehouse.last_loads(limit=2)

    assert loads.columns[:2] == ["batch_id", "kind"]
    assert [row[0] for row in loads.rows] == ["b-2", "b-1"]
    assert warehouse.table_row_counts() == {
        "events": 3,
        "events_quarantine": 0,
        "loaded_batches": 3,
        "daily_event_counts": 0,
        "daily_active_users": 0,
    }


# -- BigQuery only --------------------------------------------------------------------------


def test_tables_are_partitioned_clustered_and_typed(bigquery_endpoint: BigQueryEndpoint) -> None:
    warehouse = _bigquery(
        bigquery_endpoint, partition_expiration_days=400, require_partition_filter=True
    )
    warehouse.ensure_schema()
    warehouse.ensure_schema()  # idempotent

    events = warehouse.client.get_table(warehouse.table_id("events"))
    assert events.time_partitioning.type_ == "DAY"
    assert events.time_partitioning.field == "timestamp"
    assert events.time_partitioning.expiration_ms == 400 * 86_400_000
    # bqemulator does not keep require_partition_filter: check what is sent on creation.
    definition = warehouse.table_definition(
        "events", TABLE_COLUMNS["events"], TABLE_LAYOUTS["events"]
    )
    assert definition.require_partition_filter is True
    assert events.clustering_fields == ["event", "message_id"]
    types = {field.name: field.field_type for field in events.schema}
    assert types["properties"] == "JSON" and types["timestamp"] == "TIMESTAMP"
    ledger = warehouse.client.get_table(warehouse.table_id("loaded_batches"))
    assert ledger.time_partitioning.field == "loaded_at"
    assert ledger.clustering_fields == ["batch_id"]
    assert ledger.time_partitioning.expiration_ms is None  # the ledger never expires


def test_a_new_contract_column_is_added_to_an_existing_table(
    bigquery_warehouse: BigQueryWarehouse,
) -> None:
    warehouse = bigquery_warehouse
    warehouse.client.create_dataset(f"{warehouse.project}.{warehouse.config.dataset}")
    old = bigquery.Table(
        warehouse.table_id("daily_active_users"),
        schema=[
            bigquery.SchemaField("day", "DATE", mode="REQUIRED"),
            bigquery.SchemaField("active_users", "INT64"),
        ],
    )
    warehouse.client.create_table(old)
    warehouse.client.query(
        f"INSERT INTO {table(warehouse, 'daily_active_users')} "
        "(day, active_users) VALUES (DATE '2026-11-01', 3)"
    ).result()

    warehouse.ensure_schema()

    schema = warehouse.client.get_table(warehouse.table_id("daily_active_users")).schema
    assert [field.name for field in schema] == [
        "day",
        "active_users",
        "identified_users",
        "anonymous_users",
        "updated_at",
    ]
    result = warehouse.query(
        f"SELECT active_users, identified_users FROM {table(warehouse, 'daily_active_users')}"
    )
    assert result.rows == [(3, None)]


def test_a_failed_transaction_leaves_nothing_behind(
    bigquery_warehouse: BigQueryWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = bigquery_warehouse
    batch = staged([event("m-1"), event("m-2")])

    def broken_commit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the transaction failed")

    monkeypatch.setattr(warehouse, "_commit_load", broken_commit)
    with pytest.raises(RuntimeError, match="transaction failed"):
        warehouse.load_batches([batch], dedupe_window_days=7)
    monkeypatch.undo()

    assert warehouse.table_row_counts()["events"] == 0
    assert warehouse.loaded_batch_ids([batch.batch_id]) == set()
    tables = {t.table_id for t in warehouse.client.list_tables(warehouse.config.dataset)}
    assert not [name for name in tables if name.startswith(STAGING_PREFIX)]
    # The staged rows were committed to the staging table and dropped; loading again works.
    assert warehouse.load_batches([batch], dedupe_window_days=7).rows_inserted == 2


def test_concurrent_loads_of_overlapping_batches_store_each_message_once(
    bigquery_warehouse: BigQueryWarehouse,
) -> None:
    warehouse = bigquery_warehouse
    warehouse.ensure_schema()
    shared = [event(f"m-{i}") for i in range(20)]
    batches = [
        staged([*shared, *(event(f"own-{n}-{i}") for i in range(5))], batch_id=f"b-{n}")
        for n in range(3)
    ]
    results: list[object] = []

    def load(batch: object) -> None:
        results.append(warehouse.load_batches([batch, batches[0]], dedupe_window_days=7))

    threads = [threading.Thread(target=load, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(results) == 3
    counted = warehouse.query(
        f"SELECT message_id, count(*) FROM {table(warehouse, 'events')} GROUP BY message_id"
    )
    assert len(counted.rows) == 20 + 15 and {n for _, n in counted.rows} == {1}
    assert warehouse.loaded_batch_ids([b.batch_id for b in batches]) == {"b-0", "b-1", "b-2"}
    fence = warehouse.query(f"SELECT kind FROM {table(warehouse, FENCE_TABLE)} ORDER BY kind")
    assert fence.rows == [("events",), ("quarantine",)]


def test_query_is_read_only_and_takes_parameters(bigquery_warehouse: BigQueryWarehouse) -> None:
    warehouse = bigquery_warehouse
    warehouse.load_batches([staged([event("m-1"), event("m-2")])], dedupe_window_days=7)

    result = warehouse.query(
        f"SELECT message_id FROM {table(warehouse, 'events')} "
        "WHERE message_id = ? AND CAST(`timestamp` AS DATE) = ? AND `timestamp` < ?",
        ["m-2", NOON.date(), NOON.replace(tzinfo=None) + timedelta(hours=1)],
    )

    assert result.rows == [("m-2",)]
    with pytest.raises(PermissionError, match="DELETE"):
        warehouse.query(f"DELETE FROM {table(warehouse, 'events')} WHERE TRUE")
    assert warehouse.table_row_counts()["events"] == 2


def test_a_batch_id_that_cannot_be_a_literal_is_refused_before_any_work(
    bigquery_warehouse: BigQueryWarehouse,
) -> None:
    with pytest.raises(ValueError, match="unexpected characters"):
        bigquery_warehouse.load_batches(
            [staged([event("m-1")], batch_id="x'; DROP TABLE events; --")], 7
        )


def test_warehouse_from_settings_picks_bigquery(bigquery_endpoint: BigQueryEndpoint) -> None:
    settings = Settings.from_env(bigquery_endpoint.settings_env("analytics_settings"))

    warehouse = warehouse_from_settings(settings)

    assert isinstance(warehouse, BigQueryWarehouse)
    assert warehouse.table_id("events") == f"{bigquery_endpoint.project}.analytics_settings.events"
    assert warehouse.table_row_counts()["events"] == 0


def test_the_dagster_resource_and_the_cli_use_bigquery(
    bigquery_endpoint: BigQueryEndpoint,
    pipeline_env: Callable[[Mapping[str, str]], None],
) -> None:
    env = bigquery_endpoint.settings_env(f"t_{uuid.uuid4().hex[:12]}")
    pipeline_env(env)
    settings = Settings.from_env(env)
    resource = warehouse_resource(settings)
    assert isinstance(resource, BigQueryWarehouseResource)
    warehouse = resource.get_warehouse()
    assert isinstance(warehouse, BigQueryWarehouse)
    batch = staged([event("m-1"), event("m-2")], batch_id="b-cli")
    warehouse.load_batches([batch], dedupe_window_days=7)

    runner = CliRunner()
    answered = runner.invoke(
        cli_main,
        ["query", "--format", "json", "SELECT message_id FROM events ORDER BY message_id"],
    )
    status = runner.invoke(cli_main, ["status"])

    assert answered.exit_code == 0, answered.output
    assert json.loads(answered.output) == [{"message_id": "m-1"}, {"message_id": "m-2"}]
    assert status.exit_code == 0, status.output
    assert "b-cli" in status.output and "warehouse unavailable" not in status.output


def test_dev_starts_an_emulator_only_when_none_answers(
    bigquery_endpoint: BigQueryEndpoint, tmp_path: Path
) -> None:
    running = Settings.from_env(bigquery_endpoint.settings_env("analytics"))
    on_duckdb = Settings.from_env({"ANALYTICS_BIGQUERY_EMULATOR_REST": bigquery_endpoint.rest})
    assert ensure_bigquery_emulator(running) is None  # reused: not ours to stop
    assert ensure_bigquery_emulator(on_duckdb) is None
    rest, grpc = free_port(), free_port()
    fresh = Settings.from_env(
        {
            "ANALYTICS_WAREHOUSE": "bigquery",
            "ANALYTICS_BIGQUERY_EMULATOR_REST": f"http://127.0.0.1:{rest}",
            "ANALYTICS_BIGQUERY_EMULATOR_GRPC": f"127.0.0.1:{grpc}",
            "ANALYTICS_STATE_DIR": str(tmp_path / "state"),
        }
    )

    started = ensure_bigquery_emulator(fresh)

    assert started is not None
    try:
        assert rest_answers(started.rest_endpoint) and grpc_accepts(started.grpc_endpoint)
        warehouse = warehouse_from_settings(fresh)
        warehouse.load_batches([staged([event("m-1")])], dedupe_window_days=7)
        assert warehouse.table_row_counts()["events"] == 1
    finally:
        started.stop()
    assert started.process.poll() is not None
    assert not rest_answers(started.rest_endpoint, timeout=0.5)
    assert (tmp_path / "state" / "bigquery-emulator").is_dir()  # tables persist for dev


def test_a_big_load_commits_in_chunks_and_still_dedupes_across_them(
    bigquery_warehouse: BigQueryWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bigquery_module, "MAX_ROWS_PER_TRANSACTION", 3)
    warehouse = bigquery_warehouse
    batch_a = staged([event("m-1"), event("m-2"), event("m-3")], batch_id="b-a")
    batch_b = staged([event("m-3"), event("m-4")], batch_id="b-b")  # m-3 again
    batch_c = staged([event("m-5"), event("m-1")], batch_id="b-c")  # m-1 again

    result = warehouse.load_batches([batch_a, batch_b, batch_c], dedupe_window_days=7)

    assert (result.rows_received, result.rows_inserted, result.duplicates_skipped) == (7, 5, 2)
    assert result.reconciles and sorted(result.loaded_batch_ids) == ["b-a", "b-b", "b-c"]
    assert sorted(events_by_id(warehouse)) == ["m-1", "m-2", "m-3", "m-4", "m-5"]
    loads = warehouse.query(
        f"SELECT COUNT(DISTINCT loaded_at) FROM {table(warehouse, 'loaded_batches')}"
    )
    assert loads.rows == [(2,)]  # [a] then [b, c]: two transactions
