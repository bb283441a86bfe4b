"""BigQueryWarehouse against the real emulator (REST + Storage Write API over gRPC): what only
BigQuery has (table layout, schema evolution, write streams and their recovery, the read-only
`query`, the Dagster resource and the CLI on BigQuery, the emulator `dev` starts).

The exactly-once semantics both warehouses share are tested in `test_warehouses.py`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.cloud import bigquery

from analytics_pipeline.cli import main as cli_main
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.resources import resources_for
from analytics_pipeline.loader.plan import plan_load
from analytics_pipeline.local.bigquery_emulator import (
    ensure_bigquery_emulator,
    grpc_accepts,
    rest_answers,
)
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import Warehouse, open_warehouse
from analytics_pipeline.warehouse.bigquery import BigQueryWarehouse
from analytics_pipeline.warehouse.bigquery import warehouse as warehouse_module
from analytics_pipeline.warehouse.bigquery import write_stream as write_stream_module
from analytics_pipeline.warehouse.bigquery.schema import table_definition
from analytics_pipeline.warehouse.tables import TABLE_COLUMNS, TABLE_LAYOUTS
from analytics_pipeline_testkit.environments import BigQueryEndpoint
from analytics_pipeline_testkit.loading import batch_loader, load_once
from analytics_pipeline_testkit.processes import free_port
from analytics_pipeline_testkit.rows import (
    NOON,
    bigquery_warehouse_on,
    event,
    quarantined,
    staged,
)

QUARANTINE = BatchKind.QUARANTINE


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
    deltas = warehouse.client.get_table(warehouse.table_id("daily_event_counts_deltas"))
    assert deltas.time_partitioning.field == "day"
    assert deltas.clustering_fields == ["type", "event"]
    for view in ("daily_event_counts", "daily_active_users"):
        assert warehouse.client.get_table(warehouse.table_id(view)).table_type == "VIEW"


def create_old_table(
    warehouse: BigQueryWarehouse, name: str, schema: list[bigquery.SchemaField]
) -> None:
    """A table as an older release created it, in a dataset `ensure_schema` has not seen."""
    warehouse.client.create_dataset(f"{warehouse.project}.{warehouse.config.dataset}")
    warehouse.client.create_table(bigquery.Table(warehouse.table_id(name), schema=schema))


def test_a_new_contract_column_is_added_to_an_existing_table(
    bigquery_warehouse: BigQueryWarehouse,
) -> None:
    warehouse = bigquery_warehouse
    create_old_table(
        warehouse,
        "loaded_batches",
        [
            bigquery.SchemaField("batch_id", "STRING", mode="REQUIRED"),
            bigquery.SchemaField("kind", "STRING", mode="REQUIRED"),
            bigquery.SchemaField("loaded_at", "TIMESTAMP", mode="REQUIRED"),
        ],
    )
    warehouse.client.query(
        f"INSERT INTO {table(warehouse, 'loaded_batches')} (batch_id, kind, loaded_at) "
        "VALUES ('b-old', 'events', CURRENT_TIMESTAMP())"
    ).result()

    warehouse.ensure_schema()

    schema = warehouse.client.get_table(warehouse.table_id("loaded_batches")).schema
    assert [field.name for field in schema] == [
        "batch_id",
        "kind",
        "loaded_at",
        "day",
        "rows_declared",
        "rows_inserted",
        "duplicates_skipped",
        "load_id",
    ]
    result = warehouse.query(f"SELECT batch_id, load_id FROM {table(warehouse, 'loaded_batches')}")
    assert result.rows == [("b-old", None)]


def test_an_old_aggregate_table_is_replaced_by_its_view(
    bigquery_warehouse: BigQueryWarehouse,
) -> None:
    """Before incremental aggregates `daily_event_counts` was a table of derived rows."""
    warehouse = bigquery_warehouse
    create_old_table(
        warehouse,
        "daily_event_counts",
        [bigquery.SchemaField("day", "DATE"), bigquery.SchemaField("events", "INT64")],
    )

    warehouse.ensure_schema()

    view = warehouse.client.get_table(warehouse.table_id("daily_event_counts"))
    assert view.table_type == "VIEW"
    columns = warehouse.query(f"SELECT * FROM {table(warehouse, 'daily_event_counts')}").columns
    assert columns == ["day", "type", "event", "events", "users", "updated_at"]


def test_nothing_is_visible_before_the_commit_and_everything_after(
    bigquery_warehouse: BigQueryWarehouse, tmp_path: Path
) -> None:
    """The write streams of a prepared load hold every row, invisibly, until the commit."""
    warehouse = bigquery_warehouse
    with batch_loader(warehouse, tmp_path / "store") as loader:
        plan = plan_load(
            [staged([event("m-1"), event("m-2")]), staged([quarantined("q-1")], kind=QUARANTINE)],
            loader.store.known,
            loader.store.loaded_batches,
        )
        prepared = warehouse.prepare(plan)

        invisible = warehouse.table_row_counts()
        warehouse.commit(plan, prepared)
        warehouse.commit(plan, prepared)  # a retried commit changes nothing

    assert {invisible[t] for t in ("events", "events_quarantine", "loaded_batches")} == {0}
    counts = warehouse.table_row_counts()
    assert (counts["events"], counts["events_quarantine"], counts["loaded_batches"]) == (2, 1, 2)
    assert [table for table, *_ in prepared["streams"]][-1] == "loaded_batches"  # ledger last


def test_a_load_whose_streams_are_lost_is_judged_by_its_rows(
    bigquery_warehouse: BigQueryWarehouse, tmp_path: Path
) -> None:
    """Recovery when the streams of an intent can no longer be committed (BigQuery dropped
    them, or the emulator restarted): the load's `loaded_at` in its tables decides."""
    warehouse = bigquery_warehouse
    with batch_loader(warehouse, tmp_path / "store") as loader:
        committed = plan_load(
            [staged([event("m-1")])], loader.store.known, loader.store.loaded_batches
        )
        prepared = warehouse.prepare(committed)
        warehouse.commit(committed, prepared)
        never = plan_load([staged([event("m-2")])], loader.store.known, loader.store.loaded_batches)
        never_prepared = warehouse.prepare(never)

    def lost(prepared: dict) -> dict:
        streams = [
            [table, f"{stream}-gone", low, high] for table, stream, low, high in prepared["streams"]
        ]
        return {**prepared, "streams": streams}

    assert warehouse.recover(committed.load_id, lost(prepared)) is True
    assert warehouse.recover(never.load_id, lost(never_prepared)) is False
    assert sorted(events_by_id(warehouse)) == ["m-1"]


def test_a_failed_commit_leaves_nothing_behind(
    bigquery_warehouse: BigQueryWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = bigquery_warehouse
    batch = staged([event("m-1"), event("m-2")])

    def refuse(*args: object) -> None:
        raise RuntimeError("commit refused")

    with batch_loader(warehouse, tmp_path / "store") as loader:
        monkeypatch.setattr(write_stream_module, "commit", refuse)
        monkeypatch.setattr(warehouse_module, "commit", refuse)
        failed = loader.load_all([batch])
        monkeypatch.undo()
        assert failed.failures and loader.store.pending() == []
        assert warehouse.table_row_counts()["events"] == 0
        assert loader.load([batch]).rows_inserted == 2  # nothing of the first attempt counted


def test_query_is_read_only_and_takes_parameters(
    bigquery_warehouse: BigQueryWarehouse, tmp_path: Path
) -> None:
    warehouse = bigquery_warehouse
    load_once(warehouse, [staged([event("m-1"), event("m-2")])], tmp_path / "store")

    result = warehouse.query(
        f"SELECT message_id FROM {table(warehouse, 'events')} "
        "WHERE message_id = ? AND CAST(`timestamp` AS DATE) = ? AND `timestamp` < ?",
        ["m-2", NOON.date(), NOON.replace(tzinfo=None) + timedelta(hours=1)],
    )

    assert result.rows == [("m-2",)]
    with pytest.raises(PermissionError, match="DELETE"):
        warehouse.query(f"DELETE FROM {table(warehouse, 'events')} WHERE TRUE")
    assert warehouse.table_row_counts()["events"] == 2


def test_open_warehouse_picks_bigquery(bigquery_endpoint: BigQueryEndpoint) -> None:
    settings = Settings.from_env(bigquery_endpoint.settings_env("analytics_settings"))

    warehouse = open_warehouse(settings)

    assert isinstance(warehouse, BigQueryWarehouse)
    assert warehouse.table_id("events") == f"{bigquery_endpoint.project}.analytics_settings.events"
    assert warehouse.table_row_counts()["events"] == 0


def test_the_dagster_resource_and_the_cli_use_bigquery(
    bigquery_endpoint: BigQueryEndpoint,
    tmp_path: Path,
    pipeline_env: Callable[[Mapping[str, str]], None],
) -> None:
    env = bigquery_endpoint.settings_env(f"t_{uuid.uuid4().hex[:12]}")
    pipeline_env(env)
    settings = Settings.from_env(env)
    resource = resources_for(settings)["warehouse"]
    warehouse = resource.get_warehouse()
    assert isinstance(warehouse, BigQueryWarehouse)
    batch = staged([event("m-1"), event("m-2")], batch_id="b-cli")
    load_once(warehouse, [batch], tmp_path / "store")

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
        load_once(warehouse, [staged([event("m-1")])], tmp_path / "store")
        assert warehouse.table_row_counts()["events"] == 1
    finally:
        started.stop()
    assert started.exit_code() is not None
    assert not rest_answers(started.rest_endpoint, timeout=0.5)
    assert (tmp_path / "state" / "bigquery-emulator").is_dir()  # tables persist for dev


def test_a_load_bigger_than_one_append_request_commits_whole(
    bigquery_warehouse: BigQueryWarehouse, tmp_path: Path
) -> None:
    """AppendRows requests are cut under 10 MB; the stream still commits all of them at once."""
    big = {"text": "x" * 20_000}
    rows = [event(f"m-{i}", properties=big) for i in range(600)]  # ~12 MB of rows

    with batch_loader(bigquery_warehouse, tmp_path / "store") as loader:
        result = loader.load([staged(rows[:300]), staged(rows[300:])])

    assert result.rows_inserted == 600 and result.reconciles
    assert bigquery_warehouse.table_row_counts()["events"] == 600
