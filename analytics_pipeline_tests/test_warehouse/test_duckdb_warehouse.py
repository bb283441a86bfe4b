"""DuckDBWarehouse against real DuckDB files: what only the local warehouse has (its column
types, schema migration of a file, the read-only `query`, inspection of a missing file).

The exactly-once semantics both warehouses share are tested in `test_warehouses.py`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from analytics_pipeline.contract.batches import BatchKind, encode_rows
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import UnknownWarehouseError, open_warehouse
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline.warehouse.tables import ALL_TABLES, SCHEMA, TABLE_COLUMNS
from analytics_pipeline_testkit.loading import batch_loader, load_once
from analytics_pipeline_testkit.rows import NOON, event, staged


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(tmp_path / "nested" / "warehouse.duckdb")


def table_columns(path: Path) -> dict[str, list[tuple[str, str]]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? ORDER BY table_name, ordinal_position",
            [SCHEMA],
        ).fetchall()
    columns: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for table, column, data_type in rows:
        columns[table].append((column, data_type))
    return dict(columns)


def events_by_id(warehouse: DuckDBWarehouse) -> dict[str, dict[str, object]]:
    result = warehouse.query(f"SELECT * FROM {SCHEMA}.events")
    return {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}


# -- schema ---------------------------------------------------------------------------------


def test_ensure_schema_creates_every_table_and_keeps_data_when_called_again(
    warehouse: DuckDBWarehouse,
) -> None:
    warehouse.ensure_schema()
    load_once(warehouse, [staged([event("m-1")])], warehouse.path.parent / "store")
    warehouse.ensure_schema()
    DuckDBWarehouse(warehouse.path).ensure_schema()

    columns = table_columns(warehouse.path)
    assert set(columns) == set(ALL_TABLES)
    for table, expected in TABLE_COLUMNS.items():
        assert [name for name, _ in columns[table]] == [column.name for column in expected]
    assert dict(columns["events"])["properties"] == "JSON"
    assert dict(columns["events"])["timestamp"] == "TIMESTAMP"
    assert warehouse.table_row_counts()["events"] == 1


def test_ensure_schema_adds_columns_missing_from_an_existing_table(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute(f"CREATE SCHEMA {SCHEMA}")
        connection.execute(
            f"CREATE TABLE {SCHEMA}.daily_active_users (day DATE NOT NULL, active_users BIGINT)"
        )
        connection.execute(f"INSERT INTO {SCHEMA}.daily_active_users VALUES ('2026-11-01', 3)")

    DuckDBWarehouse(path).ensure_schema()

    names = [name for name, _ in table_columns(path)["daily_active_users"]]
    assert names == [column.name for column in TABLE_COLUMNS["daily_active_users"]]
    result = DuckDBWarehouse(path).query(
        f"SELECT active_users, identified_users FROM {SCHEMA}.daily_active_users"
    )
    assert result.rows == [(3, None)]


# -- loading --------------------------------------------------------------------------------


def test_load_stores_typed_columns_and_utc_timestamps(warehouse: DuckDBWarehouse) -> None:
    # A client stamped +02:00; the contract normalises to UTC, so the wire carries "Z".
    local_time = datetime(2026, 11, 29, 14, 30, 5, 120000, tzinfo=timezone(timedelta(hours=2)))
    row = event(
        "m-utc",
        timestamp=local_time.astimezone(UTC),
        properties={"duration_ms": 5400, "camera": {"lens": "front", "tags": ["a", "b"]}},
        user_id="u-9",
    )
    assert b'"timestamp":"2026-11-29T12:30:05.120000Z"' in encode_rows([row])
    batch = staged([row])
    before = datetime.now(UTC).replace(tzinfo=None)

    result = load_once(warehouse, [batch], warehouse.path.parent / "store")

    stored = events_by_id(warehouse)["m-utc"]
    assert stored["timestamp"] == datetime(2026, 11, 29, 12, 30, 5, 120000)
    assert stored["received_at"] == row.received_at.replace(tzinfo=None)
    assert row.sent_at is not None
    assert stored["sent_at"] == row.sent_at.replace(tzinfo=None)
    assert stored["user_id"] == "u-9"
    assert stored["batch_id"] == batch.batch_id  # filled from the staged batch when absent
    assert stored["context"] is None  # JSON null arrives as SQL NULL
    assert before <= stored["loaded_at"] <= datetime.now(UTC).replace(tzinfo=None)
    nested = warehouse.query(
        f"SELECT properties->>'$.camera.lens', typeof(properties), "
        f"CAST(properties->'$.duration_ms' AS INTEGER) FROM {SCHEMA}.events"
    )
    assert nested.rows == [("front", "JSON", 5400)]
    assert result.rows_inserted == 1 and result.reconciles
    assert result.loaded_batch_ids == [batch.batch_id]


def test_a_corrupt_body_fails_its_batch_only(warehouse: DuckDBWarehouse, tmp_path: Path) -> None:
    good = staged([event("m-1")])
    corrupt = staged([event("m-2")], batch_id="corrupt")
    corrupt = type(corrupt)(**{**corrupt.__dict__, "ndjson_gz": corrupt.ndjson_gz[:-12]})

    with batch_loader(warehouse, tmp_path / "store") as loader:
        outcome = loader.load_all([good, corrupt])

    assert outcome.result(BatchKind.EVENTS).failed_batch_ids == ["corrupt"]
    assert "corrupt" in outcome.failures
    assert sorted(events_by_id(warehouse)) == ["m-1"]
    assert warehouse.loaded_batch_ids([good.batch_id, "corrupt"]) == {good.batch_id}


def test_a_commit_that_fails_midway_leaves_nothing_behind(
    warehouse: DuckDBWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = staged([event("m-1"), event("m-2")])

    def fail(*args: object) -> None:
        raise duckdb.ConstraintException("refused after the rows were inserted")

    monkeypatch.setattr(DuckDBWarehouse, "_insert_ledger", staticmethod(fail))
    with batch_loader(warehouse, tmp_path / "store") as loader:
        failed = loader.load_all([batch])
        assert failed.failures and loader.store.pending() == []  # abandoned, not left pending
        monkeypatch.undo()
        again = loader.load([batch])

    assert again.rows_inserted == 2  # the first attempt left no rows and no keys
    assert sorted(events_by_id(warehouse)) == ["m-1", "m-2"]


# -- inspection -----------------------------------------------------------------------------


def test_duplicate_message_ids_reports_duplicates_that_got_in(warehouse: DuckDBWarehouse) -> None:
    load_once(warehouse, [staged([event("m-1"), event("m-2")])], warehouse.path.parent / "store")
    with duckdb.connect(str(warehouse.path)) as connection:  # bypass the loader on purpose
        connection.execute(
            f"INSERT INTO {SCHEMA}.events SELECT * FROM {SCHEMA}.events WHERE message_id = 'm-2'"
        )

    assert warehouse.duplicate_message_ids(NOON.date()) == ["m-2"]
    assert warehouse.duplicate_message_ids(NOON.date() + timedelta(days=1)) == []


def test_inspection_of_a_missing_file_answers_with_empty_tables(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "absent" / "w.duckdb")

    assert warehouse.query(f"SELECT count(*) FROM {SCHEMA}.events").rows == [(0,)]
    assert warehouse.last_loads().rows == []
    assert warehouse.loaded_batch_ids(["x"]) == set()


def test_query_is_parameterised_and_read_only(warehouse: DuckDBWarehouse) -> None:
    load_once(warehouse, [staged([event("m-1"), event("m-2")])], warehouse.path.parent / "store")

    result = warehouse.query(
        f"SELECT message_id, json_extract(properties, '$') FROM {SCHEMA}.events "
        "WHERE message_id = ?",
        ["m-2"],
    )

    assert result.columns[0] == "message_id" and result.rows[0][0] == "m-2"
    with pytest.raises(duckdb.Error, match="read-only"):
        warehouse.query(f"DELETE FROM {SCHEMA}.events")
    assert warehouse.table_row_counts()["events"] == 2


def test_query_works_while_this_process_holds_the_file_read_write(
    warehouse: DuckDBWarehouse,
) -> None:
    warehouse.ensure_schema()
    with duckdb.connect(str(warehouse.path)):
        assert warehouse.query("SELECT 42 AS answer").rows == [(42,)]


# -- configuration --------------------------------------------------------------------------


def test_open_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    settings = Settings.from_env({"ANALYTICS_DUCKDB_PATH": str(path)})

    warehouse = open_warehouse(settings)

    assert isinstance(warehouse, DuckDBWarehouse) and warehouse.path == path
    unknown = Settings.from_env({"ANALYTICS_WAREHOUSE": "snowflake"})
    with pytest.raises(UnknownWarehouseError, match=r"snowflake.*duckdb"):
        open_warehouse(unknown)
