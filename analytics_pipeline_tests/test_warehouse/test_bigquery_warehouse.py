"""BigQueryWarehouse against the real emulator (REST + Storage Write API over gRPC): what only
BigQuery has (table layout, schema evolution, staging clean-up, concurrent loads, the read-only
`query`, the Dagster resource and the CLI on BigQuery, the emulator `dev` starts).

The exactly-once semantics both warehouses share are tested in `test_warehouses.py`.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.cloud import bigquery

from analytics_pipeline.cli import main as cli_main
from analytics_pipeline.defs.resources import resources_for
from analytics_pipeline.local.bigquery_emulator import (
    ensure_bigquery_emulator,
    grpc_accepts,
    rest_answers,
)
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import Warehouse, open_warehouse
from analytics_pipeline.warehouse.bigquery import FENCE_TABLE, STAGING_PREFIX, BigQueryWarehouse
from analytics_pipeline.warehouse.bigquery.schema import table_definition
from analytics_pipeline.warehouse.tables import TABLE_COLUMNS, TABLE_LAYOUTS
from analytics_pipeline_testkit.environments import BigQueryEndpoint
from analytics_pipeline_testkit.processes import free_port
from analytics_pipeline_testkit.rows import (
    NOON,
    bigquery_warehouse_on,
    event,
    staged,
)


@pytest.fixture
def bigquery_warehouse(bigquery_endpoint: BigQueryEndpoint) -> BigQueryWarehouse:
    return bigquery_warehouse_on(bigquery_endpoint)


def table(warehouse: BigQueryWarehouse, name: str) -> str:
    return f"`{warehouse.table_id(name)}`"


def events_by_id(warehouse: Warehouse) -> dict[str, dict[str, object]]:
    result = warehouse.query(f"SELECT * FROM `{warehouse.table_id('events')}`")
    return {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}


def test_tables_are_partitioned_clustered_and_typed(bigquery_endpoint: BigQueryEndpoint) -> None:
    warehouse = bigquery_warehouse_on(
        bigquery_endpoint, partition_expiration_days=400, require_partition_filter=True
    )
    warehouse.ensure_schema()
    warehouse.ensure_schema()  # idempotent

    events = warehouse.client.get_table(warehouse.table_id("events"))
    assert events.time_partitioning.type_ == "DAY"
    assert events.time_partitioning.field == "timestamp"
    assert events.time_partitioning.expiration_ms == 400 * 86_400_000
    # bqemulator does not keep require_partition_filter: check what is sent on creation.
    definition = table_definition(
        warehouse.table_id("events"),
        TABLE_COLUMNS["events"],
        TABLE_LAYOUTS["events"],
        warehouse.config,
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


def test_open_warehouse_picks_bigquery(bigquery_endpoint: BigQueryEndpoint) -> None:
    settings = Settings.from_env(bigquery_endpoint.settings_env("analytics_settings"))

    warehouse = open_warehouse(settings)

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
    resource = resources_for(settings)["warehouse"]
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
        warehouse = open_warehouse(fresh)
        warehouse.load_batches([staged([event("m-1")])], dedupe_window_days=7)
        assert warehouse.table_row_counts()["events"] == 1
    finally:
        started.stop()
    assert started.exit_code() is not None
    assert not rest_answers(started.rest_endpoint, timeout=0.5)
    assert (tmp_path / "state" / "bigquery-emulator").is_dir()  # tables persist for dev


def test_a_big_load_commits_in_chunks_and_still_dedupes_across_them(
    bigquery_endpoint: BigQueryEndpoint,
) -> None:
    warehouse = bigquery_warehouse_on(bigquery_endpoint)
    warehouse.max_rows_per_transaction = 3
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
