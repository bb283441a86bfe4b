"""The local warehouse: one DuckDB file, shared politely between processes.

DuckDB lets exactly one process open a file read-write, and while it does no other process can
open it at all (not even read-only). The loader, the aggregate runs, the CLI and any UI code all
contend for it, so every operation opens its own connection, holds it as briefly as it can and
closes it; opening retries with exponential backoff and jitter while another process holds the
lock, up to `open_timeout_seconds`.

A load arrives planned (`warehouse.base.LoadPlan`: the loader's store has already skipped
batches in the ledger and keys already loaded, and computed the aggregate deltas). Its commit is
one transaction: the fresh rows (msgspec writes them as NDJSON, DuckDB's own `read_json` reads
them with explicit column types; never `executemany`, about 1,300 rows/s), the deltas added to
the day rows of `daily_event_counts` and `daily_active_users`, and the ledger rows carrying the
load id, which is what the loader's recovery looks for after a crash. No load reads `events`:
its work does not grow with the table. `benchmarks/duckdb_load.py` measures it against a bare
`read_json`.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from analytics_pipeline.contract.batches import BatchKind, encode_rows
from analytics_pipeline.contract.rows import QUARANTINE_COLUMNS, QuarantineRow
from analytics_pipeline.warehouse.base import LoadPlan, QueryResult, TransientWarehouseError
from analytics_pipeline.warehouse.tables import (
    ALL_TABLES,
    DAILY_ACTIVE_USERS_TABLE,
    DAILY_EVENT_COUNTS_TABLE,
    EVENTS_TABLE,
    LOAD_SPECS,
    LOADED_BATCHES_COLUMNS,
    LOADED_BATCHES_TABLE,
    QUARANTINE_TABLE,
    SCHEMA,
    TABLE_COLUMNS,
    TABLE_PRIMARY_KEYS,
    LoadSpec,
)

# Largest single NDJSON line DuckDB accepts; a quarantined blob can be a few MiB of text.
MAX_JSON_OBJECT_BYTES = 64 * 1024 * 1024

_LOCK_ERROR_MARKERS = ("Could not set lock", "Conflicting lock")
_FIRST_RETRY_SECONDS = 0.02
_MAX_RETRY_SECONDS = 1.0


class WarehouseBusyError(TransientWarehouseError):
    """Another process kept the DuckDB file locked for longer than we were willing to wait."""


def _qualified(table: str) -> str:
    return f'"{SCHEMA}"."{table}"'


def _quoted(name: str) -> str:
    return f'"{name}"'


def _utc_now() -> datetime:
    """Naive UTC, the representation of every TIMESTAMP column (no session time zone involved)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _is_lock_error(error: BaseException) -> bool:
    return any(marker in str(error) for marker in _LOCK_ERROR_MARKERS)


class DuckDBWarehouse:
    """The `Warehouse` protocol on a local DuckDB file."""

    def __init__(self, path: Path, *, open_timeout_seconds: float = 60.0) -> None:
        self.path = Path(path)
        self.open_timeout_seconds = open_timeout_seconds
        self._schema_ready = False

    # -- connections -----------------------------------------------------------------------

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting with backoff + jitter while another process holds the lock."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.open_timeout_seconds
        delay = _FIRST_RETRY_SECONDS
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.ConnectionException:
                # This process already has the file open read-write (another thread); a
                # read-only open is refused then, but sharing the read-write instance works.
                if read_only:
                    return self._open(read_only=False)
                raise
            except duckdb.IOException as error:
                if not _is_lock_error(error):
                    raise
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WarehouseBusyError(
                        f"DuckDB warehouse {self.path} is locked by another process and stayed "
                        f"locked for {self.open_timeout_seconds:g} s; DuckDB allows one writing "
                        f"process at a time. Stop that process or retry later. ({error})"
                    ) from error
                time.sleep(min(remaining, random.uniform(delay / 2, delay)))
                delay = min(delay * 2, _MAX_RETRY_SECONDS)

    @contextmanager
    def _connection(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; read-only only when the file exists (it cannot create it)."""
        read_only = read_only and self.path.exists()
        connection = self._open(read_only)
        try:
            if not read_only and not self._schema_ready:
                self._ensure_schema(connection)
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connection() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                yield connection
            except BaseException:
                with suppress(duckdb.Error):
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    # -- schema ----------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        self._schema_ready = False
        with self._connection():
            pass

    def _ensure_schema(self, connection: duckdb.DuckDBPyConnection) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(SCHEMA)}")
        existing = self._existing_columns(connection)
        for table, columns in TABLE_COLUMNS.items():
            present = existing.get(table)
            if present is None:
                definitions = [
                    f"{_quoted(c.name)} {c.sql_type}{' NOT NULL' if c.not_null else ''}"
                    for c in columns
                ]
                if table in TABLE_PRIMARY_KEYS:
                    definitions.append(f"PRIMARY KEY ({_quoted(TABLE_PRIMARY_KEYS[table])})")
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {_qualified(table)} ({', '.join(definitions)})"
                )
                continue
            for column in columns:
                if column.name not in present:
                    # Additive only: NOT NULL cannot be added to a table that already has rows.
                    connection.execute(
                        f"ALTER TABLE {_qualified(table)} "
                        f"ADD COLUMN {_quoted(column.name)} {column.sql_type}"
                    )
        self._schema_ready = True

    @staticmethod
    def _existing_columns(connection: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
        rows = connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_catalog = current_database()",
            [SCHEMA],
        ).fetchall()
        columns: dict[str, set[str]] = {}
        for table, column in rows:
            columns.setdefault(table, set()).add(column)
        return columns

    # -- loading ---------------------------------------------------------------------------

    def loaded_batch_ids(self, batch_ids: Sequence[str]) -> set[str]:
        if not batch_ids:
            return set()
        with self._connection(read_only=True) as connection:
            if LOADED_BATCHES_TABLE not in self._existing_columns(connection):
                return set()
            return self._ledger_hits(connection, batch_ids)

    @staticmethod
    def _ledger_hits(connection: duckdb.DuckDBPyConnection, batch_ids: Sequence[str]) -> set[str]:
        rows = connection.execute(
            f"SELECT batch_id FROM {_qualified(LOADED_BATCHES_TABLE)} "
            "WHERE batch_id IN (SELECT unnest(?::VARCHAR[]))",
            [list(batch_ids)],
        ).fetchall()
        return {row[0] for row in rows}

    def prepare(self, plan: LoadPlan) -> dict[str, Any]:
        """Nothing is written before the commit: the commit is one transaction."""
        return {}

    def commit(self, plan: LoadPlan, prepared: dict[str, Any]) -> None:
        """One transaction: the rows, the aggregate deltas and the ledger rows (load id)."""
        loaded_at = plan.loaded_at.astimezone(UTC).replace(tzinfo=None)
        with tempfile.TemporaryDirectory(prefix="analytics-load-") as folder:
            # msgspec writes the NDJSON, DuckDB's reader loads it: never `executemany`.
            # Written before the open: the file lock covers SQL only.
            files = {}
            tables = ((BatchKind.EVENTS, plan.events), (BatchKind.QUARANTINE, plan.quarantine))
            for kind, rows in tables:
                if rows:
                    files[kind] = Path(folder) / f"{kind.value}.ndjson"
                    files[kind].write_bytes(encode_rows(rows))
            with self._transaction() as connection:
                if self._has_load(connection, plan.load_id):
                    return  # committed before: a retried commit changes nothing
                for kind, file in files.items():
                    self._insert_rows(connection, LOAD_SPECS[kind], file, loaded_at)
                self._apply_deltas(connection, plan, loaded_at)
                self._insert_ledger(connection, plan, loaded_at)

    def recover(self, load_id: str, prepared: dict[str, Any]) -> bool:
        """Nothing to finish (a transaction commits or not): is the load's ledger there?"""
        with self._connection(read_only=True) as connection:
            if LOADED_BATCHES_TABLE not in self._existing_columns(connection):
                return False
            return self._has_load(connection, load_id)

    @staticmethod
    def _has_load(connection: duckdb.DuckDBPyConnection, load_id: str) -> bool:
        row = connection.execute(
            f"SELECT count(*) FROM {_qualified(LOADED_BATCHES_TABLE)} WHERE load_id = ?",
            [load_id],
        ).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _insert_rows(
        connection: duckdb.DuckDBPyConnection, spec: LoadSpec, file: Path, loaded_at: datetime
    ) -> None:
        names = [column.name for column in spec.wire_columns]
        column_list = ", ".join(_quoted(name) for name in [*names, "loaded_at"])
        connection.execute(
            f"INSERT INTO {_qualified(spec.table)} ({column_list}) "
            f"SELECT {', '.join(_quoted(name) for name in names)}, ? "
            "FROM read_json(?, format = 'newline_delimited', columns = ?, "
            "maximum_object_size = ?)",
            [
                loaded_at,
                str(file),
                {column.name: column.sql_type for column in spec.wire_columns},
                MAX_JSON_OBJECT_BYTES,
            ],
        )

    @staticmethod
    def _apply_deltas(
        connection: duckdb.DuckDBPyConnection, plan: LoadPlan, loaded_at: datetime
    ) -> None:
        """Add the load's deltas to the day rows of the aggregates (created when missing)."""
        if plan.event_counts:
            counts = _qualified(DAILY_EVENT_COUNTS_TABLE)
            connection.execute(
                "CREATE OR REPLACE TEMP TABLE event_count_deltas AS SELECT "
                "unnest(?::DATE[]) AS day, unnest(?::VARCHAR[]) AS type, "
                "unnest(?::VARCHAR[]) AS event, unnest(?::BIGINT[]) AS events, "
                "unnest(?::BIGINT[]) AS users",
                [
                    [d.day for d in plan.event_counts],
                    [d.type for d in plan.event_counts],
                    [d.event for d in plan.event_counts],
                    [d.events for d in plan.event_counts],
                    [d.users for d in plan.event_counts],
                ],
            )
            match = "t.day = d.day AND t.type = d.type AND t.event IS NOT DISTINCT FROM d.event"
            connection.execute(
                f"UPDATE {counts} AS t SET events = t.events + d.events, "
                f"users = t.users + d.users, updated_at = ? FROM event_count_deltas AS d "
                f"WHERE {match}",
                [loaded_at],
            )
            connection.execute(
                f"INSERT INTO {counts} (day, type, event, events, users, updated_at) "
                "SELECT d.day, d.type, d.event, d.events, d.users, ? FROM event_count_deltas AS d "
                f"WHERE NOT EXISTS (SELECT 1 FROM {counts} AS t WHERE {match})",
                [loaded_at],
            )
            connection.execute("DROP TABLE temp.event_count_deltas")
        if plan.active_users:
            active = _qualified(DAILY_ACTIVE_USERS_TABLE)
            for delta in plan.active_users:
                values = [delta.active_users, delta.identified_users, delta.anonymous_users]
                changed = connection.execute(
                    f"UPDATE {active} SET active_users = active_users + ?, "
                    "identified_users = identified_users + ?, "
                    "anonymous_users = anonymous_users + ?, updated_at = ? WHERE day = ? "
                    "RETURNING day",
                    [*values, loaded_at, delta.day],
                ).fetchall()
                if not changed:
                    connection.execute(
                        f"INSERT INTO {active} (day, active_users, identified_users, "
                        "anonymous_users, updated_at) VALUES (?, ?, ?, ?, ?)",
                        [delta.day, *values, loaded_at],
                    )

    @staticmethod
    def _insert_ledger(
        connection: duckdb.DuckDBPyConnection, plan: LoadPlan, loaded_at: datetime
    ) -> None:
        batches = plan.batches
        connection.execute(
            f"INSERT INTO {_qualified(LOADED_BATCHES_TABLE)} "
            "(batch_id, kind, day, rows_declared, rows_inserted, duplicates_skipped, loaded_at, "
            "load_id) SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::DATE[]), "
            "unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::BIGINT[]), ?, ?",
            [
                [b.batch_id for b in batches],
                [b.kind.value for b in batches],
                [date.fromisoformat(b.day) for b in batches],
                [b.rows_declared for b in batches],
                [b.rows_inserted for b in batches],
                [b.duplicates_skipped for b in batches],
                loaded_at,
                plan.load_id,
            ],
        )

    def loaded_since(self, since: datetime, event_days: int) -> Iterator[tuple[str, ...]]:
        moment = since.astimezone(UTC).replace(tzinfo=None)
        queries = (
            (
                "event",
                EVENTS_TABLE,
                'message_id, CAST("timestamp" AS DATE)::VARCHAR, type, event, '
                "user_id, anonymous_id",
            ),
            ("quarantine", QUARANTINE_TABLE, "quarantine_id"),
            ("batch", LOADED_BATCHES_TABLE, "batch_id"),
        )
        with self._connection(read_only=True) as connection:
            existing = self._existing_columns(connection)
            for kind, table, columns in queries:
                if table not in existing:
                    continue
                rows = connection.execute(
                    f"SELECT {columns} FROM {_qualified(table)} WHERE loaded_at >= ?", [moment]
                ).fetchall()
                for row in rows:
                    yield (kind, *row)

    # -- aggregates ------------------------------------------------------------------------

    def refresh_daily_event_counts(self, day: date) -> int:
        return self._refresh_day(
            DAILY_EVENT_COUNTS_TABLE,
            day,
            "(day, type, event, events, users, updated_at) "
            "SELECT ?::DATE, type, event, count(*), "
            "count(DISTINCT coalesce(user_id, anonymous_id)), ? "
            f"FROM {_qualified(EVENTS_TABLE)} "
            'WHERE "timestamp" >= ? AND "timestamp" < ? GROUP BY type, event',
        )

    def refresh_daily_active_users(self, day: date) -> int:
        """One row per day that has events; a day without events gets no row."""
        return self._refresh_day(
            DAILY_ACTIVE_USERS_TABLE,
            day,
            "(day, active_users, identified_users, anonymous_users, updated_at) "
            "SELECT ?::DATE, count(DISTINCT coalesce(user_id, anonymous_id)), "
            "count(DISTINCT user_id), "
            "count(DISTINCT anonymous_id) FILTER (WHERE user_id IS NULL), ? "
            f"FROM {_qualified(EVENTS_TABLE)} "
            'WHERE "timestamp" >= ? AND "timestamp" < ? HAVING count(*) > 0',
        )

    def _refresh_day(self, table: str, day: date, columns_and_select: str) -> int:
        """Replace one day of an aggregate in a transaction; the SELECT takes (day, now, start,
        end) as parameters. Returns the rows written."""
        start, end = _day_bounds(day)
        with self._transaction() as connection:
            connection.execute(f"DELETE FROM {_qualified(table)} WHERE day = ?", [day])
            row = connection.execute(
                f"INSERT INTO {_qualified(table)} {columns_and_select}",
                [day, _utc_now(), start, end],
            ).fetchone()
        return int(row[0]) if row else 0

    # -- inspection ------------------------------------------------------------------------

    def duplicate_message_ids(self, day: date, limit: int = 10) -> list[str]:
        start, end = _day_bounds(day)
        with self._connection(read_only=True) as connection:
            if EVENTS_TABLE not in self._existing_columns(connection):
                return []
            rows = connection.execute(
                f"SELECT message_id FROM {_qualified(EVENTS_TABLE)} "
                'WHERE "timestamp" >= ? AND "timestamp" < ? '
                "GROUP BY message_id HAVING count(*) > 1 ORDER BY message_id LIMIT ?",
                [start, end, limit],
            ).fetchall()
        return [row[0] for row in rows]

    def query(self, sql: str, parameters: Sequence[Any] | None = None) -> QueryResult:
        """Read-only when the file exists, so users cannot change tables by accident."""
        with self._connection(read_only=True) as connection:
            cursor = connection.execute(sql, list(parameters) if parameters is not None else None)
            if cursor.description is None:
                return QueryResult(columns=[], rows=[])
            columns = [description[0] for description in cursor.description]
            return QueryResult(columns=columns, rows=cursor.fetchall())

    def quarantined(self, reason: str, limit: int | None = None) -> list[QuarantineRow]:
        """Quarantine rows with `reason` not replayed yet, oldest first."""
        names = list(QUARANTINE_COLUMNS)
        with self._connection() as connection:  # read-write: adds `replayed_at` to old files
            rows = connection.execute(
                f"SELECT {', '.join(_quoted(name) for name in names)} "
                f"FROM {_qualified(QUARANTINE_TABLE)} "
                "WHERE reason = ? AND replayed_at IS NULL ORDER BY received_at, quarantine_id "
                "LIMIT ?",
                [reason, limit if limit is not None else 2**62],
            ).fetchall()
        quarantine: list[QuarantineRow] = []
        for row in rows:
            values = dict(zip(names, row, strict=True))
            values["received_at"] = values["received_at"].replace(tzinfo=UTC)
            quarantine.append(QuarantineRow(**values))
        return quarantine

    def mark_quarantine_replayed(self, quarantine_ids: Sequence[str]) -> int:
        """Stamp `replayed_at` on rows not stamped yet; returns how many were stamped."""
        if not quarantine_ids:
            return 0
        with self._transaction() as connection:
            changed = connection.execute(
                f"UPDATE {_qualified(QUARANTINE_TABLE)} SET replayed_at = ? "
                "WHERE replayed_at IS NULL AND quarantine_id IN (SELECT unnest(?::VARCHAR[]))",
                [_utc_now(), list(quarantine_ids)],
            ).fetchone()
        return int(changed[0]) if changed else 0

    def table_row_counts(self) -> dict[str, int]:
        """Every table of the schema; a table not created yet counts 0."""
        with self._connection(read_only=True) as connection:
            existing = self._existing_columns(connection)
            counts = dict.fromkeys(ALL_TABLES, 0)
            for table in existing:
                row = connection.execute(f"SELECT count(*) FROM {_qualified(table)}").fetchone()
                counts[table] = int(row[0]) if row else 0
        return counts

    def last_loads(self, limit: int = 5) -> QueryResult:
        columns = [column.name for column in LOADED_BATCHES_COLUMNS]
        with self._connection(read_only=True) as connection:
            if LOADED_BATCHES_TABLE not in self._existing_columns(connection):
                return QueryResult(columns=columns, rows=[])
            rows = connection.execute(
                f"SELECT {', '.join(_quoted(name) for name in columns)} "
                f"FROM {_qualified(LOADED_BATCHES_TABLE)} "
                "ORDER BY loaded_at DESC, batch_id LIMIT ?",
                [limit],
            ).fetchall()
        return QueryResult(columns=columns, rows=rows)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day as naive UTC timestamps: a range filter zone maps can prune."""
    start = datetime(day.year, day.month, day.day)
    return start, start + timedelta(days=1)
