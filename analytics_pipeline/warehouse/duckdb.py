"""The local warehouse: one DuckDB file, shared politely between processes.

DuckDB lets exactly one process open a file read-write, and while it does no other process can
open it at all (not even read-only). The loader, the aggregate runs, the CLI and any UI code all
contend for it, so every operation opens its own connection, holds it as briefly as it can and
closes it; opening retries with exponential backoff and jitter while another process holds the
lock, up to `open_timeout_seconds`.

Loads hand the batches' gzip NDJSON files to DuckDB's own reader (`read_json` with explicit
column types) into a temp table, and then one transaction does: in-load dedupe on the keys only,
an anti join against recent `events`, the insert and the ledger rows. Never `executemany`
(about 1,300 rows/s). `benchmarks/duckdb_load.py` measures this against a bare `read_json`.

Dedupe window trade-off: the anti join only looks at `events` whose timestamp lies within
`dedupe_window_days` of the load's min/max timestamp. That keeps the cost of each load bounded
by the window (zone maps skip older row groups) instead of growing with the table. A duplicate
whose corrected timestamp is further than the window from its first copy is inserted again;
`duplicate_message_ids` surfaces such cases per day. Duplicates from retries carry (nearly) the
same timestamp, so in practice the window only has to cover redelivery delays.
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

from analytics_pipeline.contract.rows import QUARANTINE_COLUMNS, QuarantineRow
from analytics_pipeline.warehouse.base import (
    LoadResult,
    QueryResult,
    StagedBatch,
    TransientWarehouseError,
    distinct_batches,
)
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

    def load_batches(self, batches: Sequence[StagedBatch], dedupe_window_days: int) -> LoadResult:
        """Exactly once: ledger skip per batch, then in-load and against-table dedupe per row.

        A batch id repeated within the call is one batch (ids are derived from content), so it
        is loaded, or counted as already loaded, once. `batches` counts distinct ids.
        """
        distinct, kind = distinct_batches(batches)
        result = LoadResult(batches=len(distinct))
        if kind is None:
            return result
        spec = LOAD_SPECS[kind]

        with tempfile.TemporaryDirectory(prefix="analytics-load-") as folder:
            # The gzip bodies go to DuckDB as they are: its reader gunzips the files in
            # parallel, which measured ~0.2 s faster per 200k events than gunzip in Python plus
            # writing five times the bytes. Written before the open: the lock covers SQL only.
            files: dict[str, str] = {}
            for index, batch in enumerate(distinct.values()):
                file = Path(folder) / f"{index}.ndjson.gz"
                file.write_bytes(batch.ndjson_gz)
                files[batch.batch_id] = str(file)

            with self._transaction() as connection:
                already = self._ledger_hits(connection, list(distinct))
                result.batches_already_loaded = len(already)
                fresh = [batch for batch in distinct.values() if batch.batch_id not in already]
                if fresh:
                    self._load_fresh(connection, spec, fresh, files, dedupe_window_days, result)
        return result

    def _load_fresh(
        self,
        connection: duckdb.DuckDBPyConnection,
        spec: LoadSpec,
        fresh: list[StagedBatch],
        files: dict[str, str],
        dedupe_window_days: int,
        result: LoadResult,
    ) -> None:
        loaded_at = _utc_now()
        key, window = _quoted(spec.key), _quoted(spec.window_column)
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE load_batches AS SELECT "
            "unnest(?::VARCHAR[]) AS filename, unnest(?::VARCHAR[]) AS staged_batch_id, "
            "unnest(?::DATE[]) AS day, unnest(?::BIGINT[]) AS rows_declared",
            [
                [files[batch.batch_id] for batch in fresh],
                [batch.batch_id for batch in fresh],
                [date.fromisoformat(batch.day) for batch in fresh],
                [batch.row_count for batch in fresh],
            ],
        )
        wire_names = [column.name for column in spec.wire_columns]
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE load_rows AS "
            "SELECT r.* EXCLUDE (filename), b.staged_batch_id "
            "FROM read_json(?::VARCHAR[], format = 'newline_delimited', columns = ?, "
            "compression = 'gzip', filename = true, maximum_object_size = ?) AS r "
            "JOIN load_batches AS b USING (filename)",
            [
                [files[batch.batch_id] for batch in fresh],
                {column.name: column.sql_type for column in spec.wire_columns},
                MAX_JSON_OBJECT_BYTES,
            ],
        )
        # Dedupe on the keys only (a narrow hash aggregate), never by sorting the wide rows:
        # the first copy of each key within the load wins, then keys already stored drop out.
        low, high = connection.execute(
            f"SELECT min({window}), max({window}) FROM load_rows"
        ).fetchone() or (None, None)
        first = "(received_at, staged_batch_id, rowid)"
        latency_column = (
            ", arg_min(sent_at, " + first + ") AS sent_at" if spec.measure_latency else ""
        )
        window_delta = timedelta(days=dedupe_window_days)
        connection.execute(
            "CREATE OR REPLACE TEMP TABLE load_new AS "
            f"SELECT arg_min(rowid, {first}) AS row_id, "
            f"arg_min(staged_batch_id, {first}) AS staged_batch_id{latency_column} "
            f"FROM load_rows AS c "
            f"WHERE NOT EXISTS (SELECT 1 FROM {_qualified(spec.table)} AS t "
            f"WHERE t.{key} = c.{key} AND t.{window} BETWEEN ? AND ?) "
            f"GROUP BY c.{key}",
            [
                (low or loaded_at) - window_delta,
                (high or loaded_at) + window_delta,
            ],
        )

        select_list = ", ".join(
            "coalesce(batch_id, staged_batch_id)" if name == "batch_id" else _quoted(name)
            for name in wire_names
        )
        column_list = ", ".join(_quoted(name) for name in [*wire_names, "loaded_at"])
        connection.execute(
            f"INSERT INTO {_qualified(spec.table)} ({column_list}) "
            f"SELECT {select_list}, ? FROM load_rows "
            "WHERE rowid IN (SELECT row_id FROM load_new)",
            [loaded_at],
        )
        ledger = connection.execute(
            f"INSERT INTO {_qualified(LOADED_BATCHES_TABLE)} "
            "(batch_id, kind, day, rows_declared, rows_inserted, duplicates_skipped, loaded_at) "
            "SELECT b.staged_batch_id, ?, b.day, b.rows_declared, coalesce(n.rows, 0), "
            "coalesce(r.rows, 0) - coalesce(n.rows, 0), ? FROM load_batches AS b "
            "LEFT JOIN (SELECT staged_batch_id, count(*) AS rows FROM load_rows GROUP BY ALL) AS r "
            "USING (staged_batch_id) "
            "LEFT JOIN (SELECT staged_batch_id, count(*) AS rows FROM load_new GROUP BY ALL) AS n "
            "USING (staged_batch_id) "
            "RETURNING rows_declared, rows_inserted, duplicates_skipped",
            [spec.kind.value, loaded_at],
        ).fetchall()
        for declared, inserted, skipped in ledger:
            result.rows_declared += declared
            result.rows_inserted += inserted
            result.duplicates_skipped += skipped
            result.rows_received += inserted + skipped
        result.loaded_batch_ids = [batch.batch_id for batch in fresh]

        if spec.measure_latency:
            p50, worst = connection.execute(
                "SELECT quantile_cont(epoch(?::TIMESTAMP - sent_at), 0.5), "
                "max(epoch(?::TIMESTAMP - sent_at)) FROM load_new WHERE sent_at IS NOT NULL",
                [loaded_at, loaded_at],
            ).fetchone() or (None, None)
            result.seconds_from_sent_at_p50 = p50
            result.seconds_from_sent_at_max = worst
        for table in ("load_new", "load_rows", "load_batches"):
            connection.execute(f"DROP TABLE IF EXISTS temp.{table}")

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
