"""DuckDBWarehouse against real DuckDB files: schema, exactly-once loads, aggregates, inspection."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from analytics_pipeline.contract.batches import BatchKind, encode_rows
from analytics_pipeline.contract.rows import EventRow
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse import (
    ALL_TABLES,
    SCHEMA,
    DuckDBWarehouse,
    UnknownWarehouseError,
    warehouse_from_settings,
)
from analytics_pipeline.warehouse.duckdb import TABLE_COLUMNS
from analytics_pipeline_tests.test_warehouse.builders import NOON, event, quarantined, staged


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
    warehouse.load_batches([staged([event("m-1")])], dedupe_window_days=7)
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

    result = warehouse.load_batches([batch], dedupe_window_days=7)

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


def test_same_batch_twice_is_skipped_by_the_ledger(warehouse: DuckDBWarehouse) -> None:
    batch = staged([event("m-1"), event("m-2")])

    first = warehouse.load_batches([batch], dedupe_window_days=7)
    second = warehouse.load_batches([batch], dedupe_window_days=7)

    assert (first.batches, first.batches_already_loaded, first.rows_inserted) == (1, 0, 2)
    assert second.batches == 1 and second.batches_already_loaded == 1
    assert (second.rows_received, second.rows_inserted, second.rows_declared) == (0, 0, 0)
    assert second.duplicates_skipped == 0 and second.loaded_batch_ids == []
    assert warehouse.loaded_batch_ids([batch.batch_id, "other"]) == {batch.batch_id}
    assert warehouse.table_row_counts()["events"] == 2


def test_already_loaded_message_id_in_another_batch_is_a_duplicate(
    warehouse: DuckDBWarehouse,
) -> None:
    warehouse.load_batches([staged([event("m-1"), event("m-2")])], dedupe_window_days=7)
    resent = event("m-2", received_at=NOON + timedelta(minutes=5))
    later = staged([resent, event("m-3")])

    result = warehouse.load_batches([later], dedupe_window_days=7)

    assert (result.rows_received, result.rows_inserted, result.duplicates_skipped) == (2, 1, 1)
    assert result.reconciles
    assert sorted(events_by_id(warehouse)) == ["m-1", "m-2", "m-3"]
    assert events_by_id(warehouse)["m-2"]["received_at"] == (NOON + timedelta(seconds=1)).replace(
        tzinfo=None
    )
    ledger = warehouse.query(
        f"SELECT rows_declared, rows_inserted, duplicates_skipped FROM {SCHEMA}.loaded_batches "
        "WHERE batch_id = ?",
        [later.batch_id],
    )
    assert ledger.rows == [(2, 1, 1)]


def test_duplicates_within_one_call_keep_the_earliest_copy(warehouse: DuckDBWarehouse) -> None:
    early = NOON + timedelta(seconds=2)
    late = NOON + timedelta(seconds=9)
    batch_a = staged([event("m-1", received_at=late), event("m-2"), event("m-2")])
    batch_b = staged([event("m-1", received_at=early), event("m-3")])

    result = warehouse.load_batches([batch_a, batch_b], dedupe_window_days=7)

    received = 5
    assert result.rows_received == received and result.rows_declared == received
    assert result.rows_inserted == 3 and result.duplicates_skipped == received - 3
    assert result.reconciles
    stored = events_by_id(warehouse)
    assert stored["m-1"]["received_at"] == early.replace(tzinfo=None)
    assert stored["m-1"]["batch_id"] == batch_b.batch_id
    assert warehouse.duplicate_message_ids(NOON.date()) == []
    ledger = dict(
        (row[0], row[1:])
        for row in warehouse.query(
            f"SELECT batch_id, rows_inserted, duplicates_skipped FROM {SCHEMA}.loaded_batches"
        ).rows
    )
    assert ledger == {batch_a.batch_id: (1, 2), batch_b.batch_id: (2, 0)}


def test_a_batch_id_repeated_in_one_call_counts_once(warehouse: DuckDBWarehouse) -> None:
    batch = staged([event("m-1"), event("m-2")])

    loaded = warehouse.load_batches([batch, batch], dedupe_window_days=7)
    replayed = warehouse.load_batches([batch, batch], dedupe_window_days=7)

    assert loaded.batches == 1 and loaded.rows_declared == 2 and loaded.reconciles
    assert loaded.loaded_batch_ids == [batch.batch_id]
    assert replayed.batches == 1 and replayed.batches_already_loaded == 1
    assert replayed.rows_declared == 0 and replayed.reconciles


def test_dedupe_window_bounds_the_lookback(warehouse: DuckDBWarehouse) -> None:
    warehouse.load_batches([staged([event("m-old")])], dedupe_window_days=7)
    ten_days_later = NOON + timedelta(days=10)
    replay = event("m-old", timestamp=ten_days_later)

    within = warehouse.load_batches([staged([replay], batch_id="b-30")], dedupe_window_days=30)
    outside = warehouse.load_batches([staged([replay], batch_id="b-7")], dedupe_window_days=7)

    assert (within.rows_inserted, within.duplicates_skipped) == (0, 1)
    # Further back than the window the copy is not seen: the documented trade-off.
    assert (outside.rows_inserted, outside.duplicates_skipped) == (1, 0)
    counted = warehouse.query(
        f"SELECT count(*) FROM {SCHEMA}.events WHERE message_id = ?", ["m-old"]
    )
    assert counted.rows == [(2,)]


def test_declared_count_mismatch_does_not_reconcile(warehouse: DuckDBWarehouse) -> None:
    result = warehouse.load_batches(
        [staged([event("m-1"), event("m-2")], row_count=3)], dedupe_window_days=7
    )

    assert result.rows_declared == 3 and result.rows_received == 2
    assert not result.reconciles


def test_latency_from_sent_at_is_measured_on_inserted_rows(warehouse: DuckDBWarehouse) -> None:
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


def test_empty_batch_is_recorded_in_the_ledger(warehouse: DuckDBWarehouse) -> None:
    empty = staged([], batch_id="empty", day="2026-11-29")

    result = warehouse.load_batches([empty], dedupe_window_days=7)

    assert result.loaded_batch_ids == ["empty"] and result.rows_received == 0
    assert result.reconciles
    assert warehouse.loaded_batch_ids(["empty"]) == {"empty"}


def test_quarantine_loads_exactly_once_by_quarantine_id(warehouse: DuckDBWarehouse) -> None:
    first = staged([quarantined("q-1"), quarantined("q-2")], kind=BatchKind.QUARANTINE)
    again = staged([quarantined("q-2"), quarantined("q-3")], kind=BatchKind.QUARANTINE)

    one = warehouse.load_batches([first], dedupe_window_days=7)
    two = warehouse.load_batches([again, first], dedupe_window_days=7)

    assert one.rows_inserted == 2 and one.reconciles
    assert two.batches_already_loaded == 1
    assert (two.rows_received, two.rows_inserted, two.duplicates_skipped) == (2, 1, 1)
    assert two.seconds_from_sent_at_p50 is None
    stored = warehouse.query(
        f"SELECT quarantine_id, reason, received_at FROM {SCHEMA}.events_quarantine "
        "ORDER BY quarantine_id"
    )
    assert stored.rows == [
        (q, "invalid_event", NOON.replace(tzinfo=None)) for q in ("q-1", "q-2", "q-3")
    ]
    kinds = warehouse.query(f"SELECT DISTINCT kind FROM {SCHEMA}.loaded_batches")
    assert kinds.rows == [("quarantine",)]
    assert warehouse.table_row_counts()["events"] == 0


def test_batches_of_different_kinds_are_refused(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(ValueError, match="one kind"):
        warehouse.load_batches(
            [staged([event("m-1")]), staged([quarantined("q-1")], kind=BatchKind.QUARANTINE)],
            dedupe_window_days=7,
        )


def test_a_failed_load_leaves_nothing_behind(warehouse: DuckDBWarehouse) -> None:
    good = staged([event("m-1")])
    corrupt = staged([event("m-2")], batch_id="corrupt")
    corrupt = type(corrupt)(**{**corrupt.__dict__, "ndjson_gz": corrupt.ndjson_gz[:-12]})

    with pytest.raises(duckdb.Error):
        warehouse.load_batches([good, corrupt], dedupe_window_days=7)

    assert warehouse.table_row_counts()["events"] == 0
    assert warehouse.loaded_batch_ids([good.batch_id, "corrupt"]) == set()


# -- aggregates -----------------------------------------------------------------------------


def known_dataset() -> list[EventRow]:
    """Two days, several users, anonymous and identified, a few event names and types."""
    rows = []
    day_two = NOON + timedelta(days=1)
    for index in range(40):
        moment = (NOON if index % 4 else day_two) + timedelta(minutes=index)
        identified = index % 3 == 0
        rows.append(
            event(
                f"m-{index}",
                timestamp=moment,
                type="screen" if index % 5 == 0 else "track",
                name=("Feed" if index % 5 == 0 else ("Liked", "Shared")[index % 2]),
                user_id=f"u-{index % 4}" if identified else None,
                anonymous_id=f"a-{index % 7}",
            )
        )
    return rows


def test_daily_aggregates_match_the_events(warehouse: DuckDBWarehouse) -> None:
    rows = known_dataset()
    warehouse.load_batches([staged(rows)], dedupe_window_days=7)
    day = NOON.date()
    of_day = [row for row in rows if row.timestamp.date() == day]
    expected_counts: dict[tuple, tuple[int, set]] = {}
    for row in of_day:
        count, users = expected_counts.get((row.type, row.event), (0, set()))
        users.add(row.user_id or row.anonymous_id)
        expected_counts[(row.type, row.event)] = (count + 1, users)

    written = warehouse.refresh_daily_event_counts(day)
    written_again = warehouse.refresh_daily_event_counts(day)
    dau_written = warehouse.refresh_daily_active_users(day)
    warehouse.refresh_daily_active_users(day)

    assert written == written_again == len(expected_counts)
    counts = warehouse.query(
        f"SELECT type, event, events, users FROM {SCHEMA}.daily_event_counts WHERE day = ?", [day]
    )
    assert {(t, e): (n, u) for t, e, n, u in counts.rows} == {
        key: (count, len(users)) for key, (count, users) in expected_counts.items()
    }
    assert dau_written == 1
    dau = warehouse.query(
        f"SELECT active_users, identified_users, anonymous_users FROM {SCHEMA}.daily_active_users"
    )
    assert dau.rows == [
        (
            len({row.user_id or row.anonymous_id for row in of_day}),
            len({row.user_id for row in of_day if row.user_id}),
            len({row.anonymous_id for row in of_day if not row.user_id}),
        )
    ]
    # The other day is not touched by this day's refresh, and an empty day writes nothing.
    assert warehouse.refresh_daily_active_users(day + timedelta(days=5)) == 0
    assert warehouse.table_row_counts()["daily_active_users"] == 1


# -- inspection -----------------------------------------------------------------------------


def test_duplicate_message_ids_reports_duplicates_that_got_in(warehouse: DuckDBWarehouse) -> None:
    warehouse.load_batches([staged([event("m-1"), event("m-2")])], dedupe_window_days=7)
    with duckdb.connect(str(warehouse.path)) as connection:  # bypass the loader on purpose
        connection.execute(
            f"INSERT INTO {SCHEMA}.events SELECT * FROM {SCHEMA}.events WHERE message_id = 'm-2'"
        )

    assert warehouse.duplicate_message_ids(NOON.date()) == ["m-2"]
    assert warehouse.duplicate_message_ids(NOON.date() + timedelta(days=1)) == []


def test_last_loads_newest_first_and_row_counts(warehouse: DuckDBWarehouse) -> None:
    batches = [staged([event(f"m-{i}")], batch_id=f"b-{i}") for i in range(3)]
    for batch in batches:
        warehouse.load_batches([batch], dedupe_window_days=7)

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


def test_inspection_of_a_missing_file_answers_with_empty_tables(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "absent" / "w.duckdb")

    assert warehouse.query(f"SELECT count(*) FROM {SCHEMA}.events").rows == [(0,)]
    assert warehouse.last_loads().rows == []
    assert warehouse.loaded_batch_ids(["x"]) == set()


def test_query_is_parameterised_and_read_only(warehouse: DuckDBWarehouse) -> None:
    warehouse.load_batches([staged([event("m-1"), event("m-2")])], dedupe_window_days=7)

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


def test_warehouse_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    settings = Settings.from_env({"ANALYTICS_DUCKDB_PATH": str(path)})

    warehouse = warehouse_from_settings(settings)

    assert isinstance(warehouse, DuckDBWarehouse) and warehouse.path == path
    unknown = Settings.from_env({"ANALYTICS_WAREHOUSE": "snowflake"})
    with pytest.raises(UnknownWarehouseError, match=r"snowflake.*duckdb"):
        warehouse_from_settings(unknown)


def test_properties_survive_as_json_text(warehouse: DuckDBWarehouse) -> None:
    properties = {"nested": {"list": [1, 2.5, "x", None], "flag": True}, "unicode": "día"}
    warehouse.load_batches([staged([event("m-1", properties=properties)])], dedupe_window_days=7)

    stored = events_by_id(warehouse)["m-1"]["properties"]

    assert isinstance(stored, str) and json.loads(stored) == properties


def test_counts_by_day_use_the_utc_date(warehouse: DuckDBWarehouse) -> None:
    late_evening_utc = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    early_next_utc = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)
    rows = [event("m-1", timestamp=late_evening_utc), event("m-2", timestamp=early_next_utc)]
    warehouse.load_batches([staged(rows)], dedupe_window_days=7)

    warehouse.refresh_daily_event_counts(date(2026, 11, 29))
    warehouse.refresh_daily_event_counts(date(2026, 11, 30))

    by_day = warehouse.query(
        f"SELECT day, sum(events) FROM {SCHEMA}.daily_event_counts GROUP BY day ORDER BY day"
    )
    expected = Counter(row.timestamp.date() for row in rows)
    assert [(day, int(total)) for day, total in by_day.rows] == sorted(expected.items())
