"""Loads through the loader and its store into each warehouse: DuckDB, and BigQuery (the real
emulator over REST and gRPC).

Every semantic test runs on both warehouses through the protocol only, so BigQuery is held to
exactly what DuckDB does. What only one warehouse has lives in `test_duckdb_warehouse.py` and
`test_bigquery_warehouse.py`; crashes between the steps of a load in `test_loader/`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.contract.rows import EventRow
from analytics_pipeline.warehouse import Warehouse
from analytics_pipeline.warehouse.bigquery import BigQueryWarehouse
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse
from analytics_pipeline_testkit.loading import BatchLoader, batch_loader
from analytics_pipeline_testkit.rows import (
    NOON,
    bigquery_warehouse_on,
    event,
    quarantined,
    staged,
)


@pytest.fixture(params=["duckdb", "bigquery"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    if request.param == "duckdb":
        return DuckDBWarehouse(tmp_path / "nested" / "warehouse.duckdb")
    return bigquery_warehouse_on(request.getfixturevalue("bigquery_endpoint"))


@pytest.fixture
def loader(warehouse: Warehouse, tmp_path: Path) -> Iterator[BatchLoader]:
    with batch_loader(warehouse, tmp_path / "loader-store") as loader:
        yield loader


def table(warehouse: Warehouse, name: str) -> str:
    if isinstance(warehouse, BigQueryWarehouse):
        return f"`{warehouse.table_id(name)}`"
    return f"analytics.{name}"


def events_by_id(warehouse: Warehouse) -> dict[str, dict[str, object]]:
    result = warehouse.query(f"SELECT * FROM {table(warehouse, 'events')}")
    return {row[0]: dict(zip(result.columns, row, strict=True)) for row in result.rows}


def test_load_stores_utc_timestamps_and_json_text(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    properties = {"nested": {"list": [1, 2.5, "x", None], "flag": True}, "unicode": "día"}
    row = event("m-utc", properties=properties, user_id="u-9")
    batch = staged([row])
    before = datetime.now(UTC).replace(tzinfo=None)

    result = loader.load([batch])

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


def test_same_batch_twice_is_skipped_by_the_ledger(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    batch = staged([event("m-1"), event("m-2")])

    first = loader.load([batch])
    second = loader.load([batch, batch])

    assert (first.batches, first.batches_already_loaded, first.rows_inserted) == (1, 0, 2)
    assert (second.batches, second.batches_already_loaded, second.rows_received) == (1, 1, 0)
    assert (second.rows_inserted, second.rows_declared, second.duplicates_skipped) == (0, 0, 0)
    assert second.loaded_batch_ids == [] and second.reconciles
    assert warehouse.loaded_batch_ids([batch.batch_id, "other"]) == {batch.batch_id}
    assert warehouse.table_row_counts()["events"] == 2


def test_duplicates_across_and_within_loads_keep_the_earliest_copy(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    loader.load([staged([event("m-0")])])
    early, late = NOON + timedelta(seconds=2), NOON + timedelta(seconds=9)
    resent = event("m-0", received_at=NOON + timedelta(minutes=5))
    batch_a = staged([event("m-1", received_at=late), event("m-2"), event("m-2"), resent])
    batch_b = staged([event("m-1", received_at=early), event("m-3")])

    result = loader.load([batch_a, batch_b])

    assert (result.rows_received, result.rows_inserted, result.duplicates_skipped) == (6, 3, 3)
    assert result.reconciles
    stored = events_by_id(warehouse)
    assert sorted(stored) == ["m-0", "m-1", "m-2", "m-3"]
    assert stored["m-1"]["received_at"] == early.replace(tzinfo=None)
    assert stored["m-1"]["batch_id"] == batch_b.batch_id
    assert warehouse.duplicate_message_ids(NOON.date()) == []
    assert stored["m-0"]["received_at"] == (NOON + timedelta(seconds=1)).replace(tzinfo=None)
    ledger = warehouse.query(
        f"SELECT batch_id, rows_declared, rows_inserted, duplicates_skipped "
        f"FROM {table(warehouse, 'loaded_batches')} WHERE batch_id IN (?, ?) ORDER BY batch_id",
        sorted([batch_a.batch_id, batch_b.batch_id]),
    )
    assert sorted(ledger.rows) == sorted([(batch_a.batch_id, 4, 1, 3), (batch_b.batch_id, 2, 2, 0)])


def test_a_batch_id_repeated_in_one_call_counts_once(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    batch = staged([event("m-1"), event("m-2")])

    loaded = loader.load([batch, batch])
    replayed = loader.load([batch, batch])

    assert loaded.batches == 1 and loaded.rows_declared == 2 and loaded.reconciles
    assert loaded.loaded_batch_ids == [batch.batch_id]
    assert replayed.batches == 1 and replayed.batches_already_loaded == 1
    assert replayed.rows_declared == 0 and replayed.reconciles


def test_a_copy_is_skipped_whatever_its_timestamp_says(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    """The index is global over its retention: a resend days later, or one whose device clock
    moved by days between the attempts, is still the same event."""
    loader.load([staged([event("m-old")])])
    replay = event("m-old", timestamp=NOON + timedelta(days=5))
    clock_moved = event("m-old", timestamp=NOON - timedelta(days=20))

    later = loader.load([staged([replay], batch_id="b-5")])
    moved = loader.load([staged([clock_moved], batch_id="b-moved")])

    assert (later.rows_inserted, later.duplicates_skipped) == (0, 1)
    assert (moved.rows_inserted, moved.duplicates_skipped) == (0, 1)
    counted = warehouse.query(
        f"SELECT count(*) FROM {table(warehouse, 'events')} WHERE message_id = ?", ["m-old"]
    )
    assert counted.rows == [(1,)]


def test_latency_from_sent_at_is_measured_on_inserted_rows(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    now = datetime.now(UTC)
    ages = [30.0, 10.0, 20.0]
    rows = [
        event(f"m-{i}", timestamp=now, received_at=now, sent_at=now - timedelta(seconds=age))
        for i, age in enumerate(ages)
    ]

    result = loader.load([staged(rows)])

    assert result.seconds_from_sent_at_p50 is not None
    assert result.seconds_from_sent_at_max is not None
    assert 20.0 <= result.seconds_from_sent_at_p50 < 20.0 + 5
    assert max(ages) <= result.seconds_from_sent_at_max < max(ages) + 5


def test_empty_batch_and_declared_count_mismatch(warehouse: Warehouse, loader: BatchLoader) -> None:
    empty = staged([], batch_id="empty", day="2026-11-29")
    short = staged([event("m-1"), event("m-2")], row_count=3)

    loaded_empty = loader.load([empty])
    loaded_short = loader.load([short])

    assert loaded_empty.loaded_batch_ids == ["empty"] and loaded_empty.reconciles
    assert loaded_empty.rows_received == 0
    assert warehouse.loaded_batch_ids(["empty"]) == {"empty"}
    assert (loaded_short.rows_declared, loaded_short.rows_received) == (3, 2)
    assert not loaded_short.reconciles


def test_quarantine_loads_once_and_replays_once(warehouse: Warehouse, loader: BatchLoader) -> None:
    first = staged([quarantined("q-1"), quarantined("q-2")], kind=BatchKind.QUARANTINE)
    again = staged([quarantined("q-2"), quarantined("q-3")], kind=BatchKind.QUARANTINE)

    one = loader.load([first])
    two = loader.load([again, first])

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
    kinds = warehouse.query(f"SELECT DISTINCT kind FROM {table(warehouse, 'loaded_batches')}")
    assert kinds.rows == [("quarantine",)]
    assert warehouse.table_row_counts()["events"] == 0


def test_events_and_quarantine_in_one_load_each_land_in_their_table(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    events = staged([event("m-1"), event("m-2")])
    rejected = staged([quarantined("q-1")], kind=BatchKind.QUARANTINE)

    outcome = loader.load_all([events, rejected])

    assert outcome.result(BatchKind.EVENTS).rows_inserted == 2
    assert outcome.result(BatchKind.QUARANTINE).rows_inserted == 1
    assert warehouse.table_row_counts()["events"] == 2
    assert warehouse.table_row_counts()["events_quarantine"] == 1
    assert warehouse.loaded_batch_ids([events.batch_id, rejected.batch_id]) == {
        events.batch_id,
        rejected.batch_id,
    }


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


def expected_aggregates(
    rows: list[EventRow], day: date
) -> tuple[dict[tuple[str, str | None], tuple[int, int]], tuple[int, int, int]]:
    """What the SQL definitions say for `day`: (type, event) -> (events, users); the DAU row."""
    of_day = [row for row in rows if row.timestamp.date() == day]
    counts: dict[tuple[str, str | None], tuple[int, set[str | None]]] = {}
    for row in of_day:
        count, users = counts.get((row.type, row.event), (0, set()))
        users.add(row.user_id or row.anonymous_id)
        counts[(row.type, row.event)] = (count + 1, users)
    dau = (
        len({row.user_id or row.anonymous_id for row in of_day}),
        len({row.user_id for row in of_day if row.user_id}),
        len({row.anonymous_id for row in of_day if not row.user_id}),
    )
    return {key: (count, len(users)) for key, (count, users) in counts.items()}, dau


def aggregates_of(warehouse: Warehouse, day: date) -> tuple[dict, list]:
    counts = warehouse.query(
        f"SELECT type, event, events, users FROM {table(warehouse, 'daily_event_counts')} "
        "WHERE day = ?",
        [day],
    )
    dau = warehouse.query(
        "SELECT active_users, identified_users, anonymous_users "
        f"FROM {table(warehouse, 'daily_active_users')} WHERE day = ?",
        [day],
    )
    return {(t, e): (int(n), int(u)) for t, e, n, u in counts.rows}, [
        tuple(int(v) for v in row) for row in dau.rows
    ]


def test_loads_keep_the_daily_aggregates_exact_incrementally(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    """Several loads, copies and users seen again across them: the aggregates the loads kept
    are exactly what the SQL over the events says, with no refresh in between."""
    rows = known_dataset()
    first, second = rows[:13], rows[13:]
    loader.load([staged(first)])
    loader.load([staged([*second, *first[:3]])])  # three copies: counted once
    day = NOON.date()

    counts, dau = expected_aggregates(rows, day)

    assert aggregates_of(warehouse, day) == (counts, [dau])
    assert (
        aggregates_of(warehouse, day + timedelta(days=1))[0]
        == expected_aggregates(rows, day + timedelta(days=1))[0]
    )


def test_refreshing_a_day_recomputes_it_from_the_events(
    warehouse: Warehouse, loader: BatchLoader
) -> None:
    """The repair (and what a backfill runs): the day's aggregates set from the day's events,
    the same however often it runs; an empty day gets no row."""
    rows = known_dataset()
    loader.load([staged(rows)])
    day = NOON.date()
    counts, dau = expected_aggregates(rows, day)

    written = warehouse.refresh_daily_event_counts(day)
    written_again = warehouse.refresh_daily_event_counts(day)
    dau_written = warehouse.refresh_daily_active_users(day)
    warehouse.refresh_daily_active_users(day)  # replaces the day's row, never adds one

    assert written == written_again == len(counts)
    assert dau_written == 1
    assert aggregates_of(warehouse, day) == (counts, [dau])
    assert warehouse.refresh_daily_active_users(day + timedelta(days=5)) == 0


def test_last_loads_newest_first_and_row_counts(warehouse: Warehouse, loader: BatchLoader) -> None:
    for i in range(3):
        loader.load([staged([event(f"m-{i}")], batch_id=f"b-{i}")])

    loads = warehouse.last_loads(limit=2)

    assert loads.columns[:2] == ["batch_id", "kind"]
    assert [row[0] for row in loads.rows] == ["b-2", "b-1"]
    assert warehouse.table_row_counts() == {
        "events": 3,
        "events_quarantine": 0,
        "loaded_batches": 3,
        "daily_event_counts": 1,  # kept by the loads: one (day, type, event)
        "daily_active_users": 1,
    }


def test_counts_by_day_use_the_utc_date(warehouse: Warehouse, loader: BatchLoader) -> None:
    late_evening_utc = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    early_next_utc = datetime(2026, 11, 30, 0, 30, tzinfo=UTC)
    rows = [event("m-1", timestamp=late_evening_utc), event("m-2", timestamp=early_next_utc)]
    loader.load([staged(rows)])

    warehouse.refresh_daily_event_counts(date(2026, 11, 29))
    warehouse.refresh_daily_event_counts(date(2026, 11, 30))

    by_day = warehouse.query(
        f"SELECT day, sum(events) FROM {table(warehouse, 'daily_event_counts')} "
        "GROUP BY day ORDER BY day"
    )
    expected = Counter(row.timestamp.date() for row in rows)
    assert [(day, int(total)) for day, total in by_day.rows] == sorted(expected.items())
