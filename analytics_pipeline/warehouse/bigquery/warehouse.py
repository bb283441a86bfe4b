"""The production warehouse: BigQuery, loaded through the Storage Write API, no query per load.

A load arrives planned (`warehouse.base.LoadPlan`): the loader's store has already skipped the
batches in its ledger and the keys already loaded, and computed the aggregate deltas, so the
warehouse only writes. `prepare` puts each table's rows (events, quarantine, the ledger rows,
the aggregate deltas) in a PENDING write stream of its own, appended with explicit offsets and
finalized: nothing is visible yet. `commit` commits the streams, the ledger's last; a commit is
atomic per table and idempotent (a stream commits once; again answers "already committed").
`recover` finishes an interrupted load by committing its streams again; a stream that can no
longer be committed (BigQuery keeps finalized data 4 h) is looked up by its load's `loaded_at`
in its table, with the partition filter the load's rows allow: the only query a load can cost,
and only after a crash.

Billed per load: no query bytes (Write API bytes only: 2 TiB a month free, then $0.025/GiB).
Quotas: one stream per table per load; no DML into `events`, so no DML concurrency limit.
Aggregates: `daily_event_counts` / `daily_active_users` are views over the delta tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.api_core import retry as google_retry
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

from analytics_pipeline.contract.rows import QUARANTINE_COLUMNS, QuarantineRow
from analytics_pipeline.warehouse.base import LoadPlan, QueryResult, TransientWarehouseError
from analytics_pipeline.warehouse.bigquery.config import BigQueryConfig, bigquery_clients
from analytics_pipeline.warehouse.bigquery.schema import (
    ACTIVE_USERS_DELTAS_TABLE,
    AGGREGATE_VIEWS,
    DELTA_TABLES,
    EVENT_COUNT_DELTAS_TABLE,
    ensure_table,
    ensure_view,
)
from analytics_pipeline.warehouse.bigquery.sql import naive_utc, parameter
from analytics_pipeline.warehouse.bigquery.write_stream import (
    StreamLost,
    commit,
    serialize,
    table_messages,
    write_pending,
)
from analytics_pipeline.warehouse.tables import (
    ALL_TABLES,
    EVENTS_TABLE,
    LOADED_BATCHES_COLUMNS,
    LOADED_BATCHES_TABLE,
    QUARANTINE_TABLE,
    TABLE_COLUMNS,
    TABLE_LAYOUTS,
    Column,
)

# SQS keeps a message 14 days at most (DLQ redrive keeps the first enqueue time), so no batch
# can come back later than that: ledger look-ups read only this many days of partitions.
LEDGER_LOOKBACK_DAYS = 15
QUERY_TIMEOUT_SECONDS = 300.0
# A repair counts the events and deltas loaded before this long ago (both sides of the
# correction from the same instant); loads after it keep adding their own deltas.
REPAIR_CUTOFF = timedelta(minutes=10)
_CONFLICT_MARKERS = ("concurrent", "aborted", "could not serialize", "conflict")
_TRANSIENT = (
    google_exceptions.ServiceUnavailable,
    google_exceptions.InternalServerError,
    google_exceptions.TooManyRequests,
    google_exceptions.GatewayTimeout,
    google_exceptions.DeadlineExceeded,
    google_exceptions.RetryError,
    ConnectionError,
    TimeoutError,
)
# What the tables are, on BigQuery: the aggregates are views, their rows in delta tables.
_TABLES: dict[str, tuple[tuple[Column, ...], Any]] = {
    **{
        name: (columns, TABLE_LAYOUTS[name])
        for name, columns in TABLE_COLUMNS.items()
        if name not in AGGREGATE_VIEWS
    },
    **DELTA_TABLES,
}
# The partition column of each table a load writes (the recovery's filter).
_PARTITION_OF = {name: layout.partition_column for name, (_, layout) in _TABLES.items()}


def _is_conflict(error: BaseException) -> bool:
    """BigQuery aborts the later of two transactions that touch the same table rows."""
    text = str(error).lower()
    return isinstance(error, google_exceptions.GoogleAPICallError) and any(
        marker in text for marker in _CONFLICT_MARKERS
    )


# Re-run a statement a concurrent transaction aborted, with exponential backoff and jitter.
_CONFLICT_RETRY = google_retry.Retry(
    predicate=_is_conflict, initial=0.2, maximum=5.0, multiplier=2.0, timeout=60.0
)


class BigQueryWarehouse:
    """The `Warehouse` protocol on a BigQuery dataset."""

    def __init__(
        self,
        config: BigQueryConfig,
        client: bigquery.Client | None = None,
        write_client: BigQueryWriteClient | None = None,
    ) -> None:
        self.config = config
        if client is None or write_client is None:
            client, write_client = bigquery_clients(config, client)
        self.client = client
        self.write_client = write_client
        self.project = config.project or client.project
        self._schema_ready = False

    # -- names and queries ---------------------------------------------------------------

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.config.dataset}.{table}"

    def _table_path(self, table: str) -> str:
        return f"projects/{self.project}/datasets/{self.config.dataset}/tables/{table}"

    def _sql_table(self, table: str) -> str:
        return f"`{self.table_id(table)}`"

    def _run(
        self, sql: str, parameters: Sequence[Any] | None = None, *, dry_run: bool = False
    ) -> bigquery.QueryJob:
        job_config = bigquery.QueryJobConfig(
            default_dataset=f"{self.project}.{self.config.dataset}",
            query_parameters=[parameter(value) for value in parameters or ()],
            dry_run=dry_run,
            use_query_cache=not dry_run,
        )
        return self.client.query(
            sql,
            job_config=job_config,
            location=self.config.location,
            retry=bigquery.DEFAULT_RETRY.with_timeout(QUERY_TIMEOUT_SECONDS),
        )

    def _rows(self, sql: str, parameters: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        job = self._run(sql, parameters)
        return [tuple(row.values()) for row in job.result(timeout=QUERY_TIMEOUT_SECONDS)]

    @contextmanager
    def _transient_errors(self) -> Iterator[None]:
        """Errors that say nothing about the batch become `TransientWarehouseError`."""
        try:
            yield
        except _TRANSIENT as error:
            raise TransientWarehouseError(f"BigQuery unavailable: {error}") from error
        except google_exceptions.GoogleAPICallError as error:
            if _is_conflict(error):
                raise TransientWarehouseError(f"BigQuery transaction conflict: {error}") from error
            raise

    # -- schema --------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        self._schema_ready = False
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        dataset = bigquery.Dataset(f"{self.project}.{self.config.dataset}")
        dataset.location = self.config.location
        self.client.create_dataset(dataset, exists_ok=True)
        for table, (columns, layout) in _TABLES.items():
            ensure_table(self.client, self.table_id(table), columns, layout, self.config)
        for view, (deltas, query) in AGGREGATE_VIEWS.items():
            ensure_view(
                self.client, self.table_id(view), query.format(deltas=self.table_id(deltas))
            )
        self._schema_ready = True

    # -- loading -------------------------------------------------------------------------

    def loaded_batch_ids(self, batch_ids: Sequence[str]) -> set[str]:
        if not batch_ids:
            return set()
        with self._transient_errors():
            try:
                rows = self._rows(
                    f"SELECT batch_id FROM {self._sql_table(LOADED_BATCHES_TABLE)} "
                    "WHERE batch_id IN UNNEST(?) "
                    f"AND loaded_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), "
                    f"INTERVAL {LEDGER_LOOKBACK_DAYS} DAY)",
                    [list(batch_ids)],
                )
            except google_exceptions.NotFound:
                return set()
        return {row[0] for row in rows}

    def prepare(self, plan: LoadPlan) -> dict[str, Any]:
        """One finalized PENDING stream per table the load writes (the ledger's last)."""
        with self._transient_errors():
            self._ensure_schema()
            streams = []
            for table, rows, (low, high) in self._load_rows(plan):
                columns = _TABLES[table][0]
                messages = table_messages(table, columns)
                stream = write_pending(
                    self.write_client, self._table_path(table), messages, serialize(messages, rows)
                )
                streams.append([table, stream, low, high])
        return {"loaded_at": plan.loaded_at.isoformat(), "streams": streams}

    def commit(self, plan: LoadPlan, prepared: dict[str, Any]) -> None:
        with self._transient_errors():
            for table, stream, _, _ in prepared["streams"]:
                commit(self.write_client, self._table_path(table), stream)

    def recover(self, load_id: str, prepared: dict[str, Any]) -> bool:
        """Commit every stream again; one that is lost counts if its rows are in its table."""
        loaded_at = datetime.fromisoformat(prepared["loaded_at"])
        committed = []
        with self._transient_errors():
            for table, stream, low, high in prepared["streams"]:
                try:
                    commit(self.write_client, self._table_path(table), stream)
                    committed.append(True)
                except StreamLost:
                    committed.append(self._rows_of_load(table, loaded_at, low, high))
        return any(committed)

    def _rows_of_load(self, table: str, loaded_at: datetime, low: str, high: str) -> bool:
        column = _PARTITION_OF[table]
        where = "loaded_at = ?"
        parameters: list[Any] = [loaded_at]
        if column:  # the partition filter: only the partitions the load wrote are read
            where += f" AND `{column}` BETWEEN ? AND ?"
            kind = date if column == "day" else datetime
            parameters += [kind.fromisoformat(low), kind.fromisoformat(high)]
        rows = self._rows(
            f"SELECT COUNT(*) FROM {self._sql_table(table)} WHERE {where}", parameters
        )
        return bool(rows and rows[0][0])

    def _load_rows(
        self, plan: LoadPlan
    ) -> Iterator[tuple[str, list[Mapping[str, Any]], tuple[str, str]]]:
        """Each table's rows of the load, with the bounds of their partition column."""
        loaded_at = plan.loaded_at
        for table, source, column in (
            (EVENTS_TABLE, plan.events, "timestamp"),
            (QUARANTINE_TABLE, plan.quarantine, "received_at"),
        ):
            if source:
                rows = [
                    {
                        **{name: getattr(row, name) for name in row.__struct_fields__},
                        "loaded_at": loaded_at,
                    }
                    for row in source
                ]
                yield table, rows, _bounds(row[column] for row in rows)
        deltas: list[Mapping[str, Any]] = [
            {**vars(delta), "loaded_at": loaded_at, "load_id": plan.load_id}
            for delta in plan.event_counts
        ]
        if deltas:
            yield EVENT_COUNT_DELTAS_TABLE, deltas, _bounds(row["day"] for row in deltas)
        active: list[Mapping[str, Any]] = [
            {**vars(delta), "loaded_at": loaded_at, "load_id": plan.load_id}
            for delta in plan.active_users
        ]
        if active:
            yield ACTIVE_USERS_DELTAS_TABLE, active, _bounds(row["day"] for row in active)
        ledger = [
            {
                "batch_id": batch.batch_id,
                "kind": batch.kind.value,
                "day": date.fromisoformat(batch.day),
                "rows_declared": batch.rows_declared,
                "rows_inserted": batch.rows_inserted,
                "duplicates_skipped": batch.duplicates_skipped,
                "loaded_at": loaded_at,
                "load_id": plan.load_id,
            }
            for batch in plan.batches
        ]
        yield LOADED_BATCHES_TABLE, ledger, (loaded_at.isoformat(), loaded_at.isoformat())

    def loaded_since(self, since: datetime, event_days: int) -> Iterator[tuple[str, ...]]:
        """Reads the partitions that can hold what was loaded since `since`: a disaster's
        query (events: the retention's days of message ids and users), never a load's."""
        oldest = since - timedelta(days=event_days)
        queries = (
            (
                "event",
                EVENTS_TABLE,
                "message_id, CAST(CAST(`timestamp` AS DATE) AS STRING), type, event, user_id, "
                "anonymous_id",
                "`timestamp` >= ? AND loaded_at >= ?",
                [oldest, since],
            ),
            ("quarantine", QUARANTINE_TABLE, "quarantine_id", "loaded_at >= ?", [since]),
            ("batch", LOADED_BATCHES_TABLE, "batch_id", "loaded_at >= ?", [since]),
        )
        for kind, table, columns, where, parameters in queries:
            try:
                rows = self._rows(
                    f"SELECT {columns} FROM {self._sql_table(table)} WHERE {where}", parameters
                )
            except google_exceptions.NotFound:
                continue
            for row in rows:
                yield (kind, *row)

    # -- aggregates ----------------------------------------------------------------------

    def _repair(self, deltas_table: str, day: date, totals_sql: str, keys: Sequence[str]) -> int:
        """Append the delta that makes the day's view equal to what the day's events say.

        Both sides count only what was loaded before the cutoff (one query, one snapshot), so
        loads during the repair keep their own deltas on top. Bills one scan of the day.
        """
        self._ensure_schema()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        cutoff = datetime.now(UTC) - REPAIR_CUTOFF
        columns = [
            c.name
            for c in DELTA_TABLES[deltas_table][0]
            if c.name not in ("day", "loaded_at", "load_id")
        ]
        values = [c for c in columns if c not in keys]
        join = " AND ".join(f"t.{k} IS NOT DISTINCT FROM d.{k}" for k in keys) or "TRUE"
        group = f"GROUP BY {', '.join(keys)}" if keys else ""
        key_list = "".join(f"COALESCE(t.{k}, d.{k}) AS {k}, " for k in keys)
        differences = ", ".join(f"IFNULL(t.{v}, 0) - IFNULL(d.{v}, 0) AS {v}" for v in values)
        rows = self._rows(
            f"WITH t AS ({totals_sql}), "
            f"d AS (SELECT {''.join(k + ', ' for k in keys)}"
            f"{', '.join(f'SUM({v}) AS {v}' for v in values)} "
            f"FROM {self._sql_table(deltas_table)} WHERE day = ? AND loaded_at < ? {group}) "
            f"SELECT {key_list}{differences} FROM t FULL OUTER JOIN d ON {join}",
            [start, start + timedelta(days=1), cutoff, day, cutoff],
        )
        now = datetime.now(UTC)
        corrections = [
            {"day": day, **dict(zip([*keys, *values], row, strict=True)), "loaded_at": now}
            for row in rows
            if any(row[len(keys) :])
        ]
        if corrections:
            messages = table_messages(deltas_table, DELTA_TABLES[deltas_table][0])
            path = self._table_path(deltas_table)
            stream = write_pending(
                self.write_client, path, messages, serialize(messages, corrections)
            )
            commit(self.write_client, path, stream)
        view = deltas_table.removesuffix("_deltas")
        counted = self._rows(f"SELECT COUNT(*) FROM {self._sql_table(view)} WHERE day = ?", [day])
        return int(counted[0][0]) if counted else 0

    def refresh_daily_event_counts(self, day: date) -> int:
        events = self._sql_table(EVENTS_TABLE)
        return self._repair(
            EVENT_COUNT_DELTAS_TABLE,
            day,
            f"SELECT type, event, COUNT(*) AS events, "
            "COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS users "
            f"FROM {events} WHERE `timestamp` >= ? AND `timestamp` < ? AND loaded_at < ? "
            "GROUP BY type, event",
            ["type", "event"],
        )

    def refresh_daily_active_users(self, day: date) -> int:
        """One row per day that has events; a day without events gets no row."""
        events = self._sql_table(EVENTS_TABLE)
        return self._repair(
            ACTIVE_USERS_DELTAS_TABLE,
            day,
            "SELECT COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS active_users, "
            "COUNT(DISTINCT user_id) AS identified_users, "
            "COUNT(DISTINCT IF(user_id IS NULL, anonymous_id, NULL)) AS anonymous_users "
            f"FROM {events} WHERE `timestamp` >= ? AND `timestamp` < ? AND loaded_at < ?",
            [],
        )

    # -- inspection ----------------------------------------------------------------------

    def duplicate_message_ids(self, day: date, limit: int = 10) -> list[str]:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        try:
            rows = self._rows(
                f"SELECT message_id FROM {self._sql_table(EVENTS_TABLE)} "
                "WHERE `timestamp` >= ? AND `timestamp` < ? "
                "GROUP BY message_id HAVING COUNT(*) > 1 ORDER BY message_id LIMIT ?",
                [start, start + timedelta(days=1), int(limit)],
            )
        except google_exceptions.NotFound:
            return []
        return [row[0] for row in rows]

    def query(self, sql: str, parameters: Sequence[Any] | None = None) -> QueryResult:
        """SELECT only (checked by a free dry run), so users cannot change tables by accident.

        Timestamps come back as naive UTC and JSON as JSON text, as from DuckDB.
        """
        plan = self._run(sql, parameters, dry_run=True)
        if plan.statement_type not in (None, "SELECT"):
            raise PermissionError(f"`query` runs SELECT statements only, not {plan.statement_type}")
        job = self._run(sql, parameters)
        result = job.result(timeout=QUERY_TIMEOUT_SECONDS)
        schema = list(result.schema or [])
        json_positions = {i for i, field in enumerate(schema) if field.field_type == "JSON"}
        rows = []
        for row in result:
            values = list(row.values())
            for i, value in enumerate(values):
                if i in json_positions and value is not None:
                    values[i] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                else:
                    values[i] = naive_utc(value)
            rows.append(tuple(values))
        return QueryResult(columns=[field.name for field in schema], rows=rows)

    def quarantined(self, reason: str, limit: int | None = None) -> list[QuarantineRow]:
        """Quarantine rows with `reason` not replayed yet, oldest first."""
        self._ensure_schema()  # adds `replayed_at` to an older table
        names = list(QUARANTINE_COLUMNS)
        rows = self._rows(
            f"SELECT {', '.join(f'`{name}`' for name in names)} "
            f"FROM {self._sql_table(QUARANTINE_TABLE)} "
            "WHERE reason = ? AND replayed_at IS NULL ORDER BY received_at, quarantine_id"
            + (" LIMIT ?" if limit is not None else ""),
            [reason] + ([int(limit)] if limit is not None else []),
        )
        return [QuarantineRow(**dict(zip(names, row, strict=True))) for row in rows]

    def mark_quarantine_replayed(self, quarantine_ids: Sequence[str]) -> int:
        """Stamp `replayed_at` on rows not stamped yet; returns how many were stamped."""
        if not quarantine_ids:
            return 0
        self._ensure_schema()
        job = _CONFLICT_RETRY(self._finished)(
            f"UPDATE {self._sql_table(QUARANTINE_TABLE)} "
            "SET replayed_at = CURRENT_TIMESTAMP() "
            "WHERE replayed_at IS NULL AND quarantine_id IN UNNEST(?)",
            [list(quarantine_ids)],
        )
        return int(job.num_dml_affected_rows or 0)

    def _finished(self, sql: str, parameters: Sequence[Any] | None = None) -> bigquery.QueryJob:
        job = self._run(sql, parameters)
        job.result(timeout=QUERY_TIMEOUT_SECONDS)
        return job

    def table_row_counts(self) -> dict[str, int]:
        """From table metadata (free, and needs no partition filter); missing tables count 0.

        bqemulator keeps no row counts in its metadata, so there the rows are counted.
        """
        counts = dict.fromkeys(ALL_TABLES, 0)
        for table in ALL_TABLES:
            try:
                metadata = self.client.get_table(self.table_id(table))
            except google_exceptions.NotFound:
                continue
            if self.config.uses_emulator or metadata.table_type == "VIEW":
                counts[table] = int(
                    self._rows(f"SELECT COUNT(*) FROM {self._sql_table(table)}")[0][0]
                )
            else:
                counts[table] = int(metadata.num_rows or 0)
        return counts

    def last_loads(self, limit: int = 5) -> QueryResult:
        """The latest ledger entries of the last LEDGER_LOOKBACK_DAYS days."""
        columns = [column.name for column in LOADED_BATCHES_COLUMNS]
        try:
            rows = self._rows(
                f"SELECT {', '.join(f'`{name}`' for name in columns)} "
                f"FROM {self._sql_table(LOADED_BATCHES_TABLE)} "
                "WHERE loaded_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), "
                f"INTERVAL {LEDGER_LOOKBACK_DAYS} DAY) "
                "ORDER BY loaded_at DESC, batch_id LIMIT ?",
                [int(limit)],
            )
        except google_exceptions.NotFound:
            rows = []
        return QueryResult(
            columns=columns, rows=[tuple(naive_utc(value) for value in row) for row in rows]
        )


def _bounds(values: Iterator[Any] | Any) -> tuple[str, str]:
    """The lowest and highest of the values, as ISO text (for an intent: JSON)."""
    ordered = sorted(values)
    return ordered[0].isoformat(), ordered[-1].isoformat()
