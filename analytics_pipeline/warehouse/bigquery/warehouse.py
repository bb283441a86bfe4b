"""The production warehouse: BigQuery, loaded through the Storage Write API, exactly once.

Write path, per `load_batches` call (one Dagster run, one kind, usually one day):

1. The ledger is asked which batch ids are already loaded; those are skipped whole.
2. The remaining batches are gunzipped and decoded here; within the load the first copy of each
   key wins, by (received_at, batch id, position): the rule DuckDB applies.
3. Those rows go into a fresh per-load staging table through a PENDING write stream
   (`write_stream.py`): the staging table holds the whole load or nothing.
4. One multi-statement transaction (`load_script.py`) moves them into the table with the ledger
   rows. COMMIT makes events and ledger visible together; a crash anywhere before it leaves
   neither, a crash after it only causes an SQS redelivery that the ledger skips.

Quotas at one load every 5 s per day partition, all day: no load jobs (1,500 per table per day
would be gone in two hours); the only DML into `events` is INSERT (mutating-DML concurrency
limits apply to UPDATE/DELETE/MERGE; the fence's UPDATE hits a one-row table, and loads of the
same kind are meant to serialise on it); Storage Write API: one stream created and committed per
load, far below the stream-creation quotas. Costs are worked out in the README.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.api_core import retry as google_retry
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

from analytics_pipeline.chunking import chunked
from analytics_pipeline.contract.batches import (
    BatchKind,
    decode_event_rows,
    decode_quarantine_rows,
    decompress,
)
from analytics_pipeline.contract.rows import QUARANTINE_COLUMNS, QuarantineRow
from analytics_pipeline.warehouse.base import (
    LoadResult,
    QueryResult,
    StagedBatch,
    TransientWarehouseError,
    distinct_batches,
)
from analytics_pipeline.warehouse.bigquery.config import BigQueryConfig, bigquery_clients
from analytics_pipeline.warehouse.bigquery.load_script import LEDGER_LOOKBACK_DAYS, load_script
from analytics_pipeline.warehouse.bigquery.schema import FENCE_COLUMNS, FENCE_TABLE, ensure_table
from analytics_pipeline.warehouse.bigquery.sql import (
    date_literal,
    naive_utc,
    parameter,
    string_literal,
    timestamp_literal,
)
from analytics_pipeline.warehouse.bigquery.write_stream import (
    serialize,
    staging_rows,
    write_committed,
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
    TABLE_COLUMNS,
    TABLE_LAYOUTS,
    LoadSpec,
    TableLayout,
)

STAGING_PREFIX = "_staging_load_"
STAGING_EXPIRATION = timedelta(days=1)  # a crashed load's staging table cleans itself up
# Keys per load transaction: 20,000 x ~40 B keeps the script's keys array under 1 MB.
MAX_ROWS_PER_TRANSACTION = 20_000
QUERY_TIMEOUT_SECONDS = 300.0
_DECODERS = {BatchKind.EVENTS: decode_event_rows, BatchKind.QUARANTINE: decode_quarantine_rows}
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


def _is_conflict(error: BaseException) -> bool:
    """BigQuery aborts the later of two transactions that touch the same table rows."""
    text = str(error).lower()
    return isinstance(error, google_exceptions.GoogleAPICallError) and any(
        marker in text for marker in _CONFLICT_MARKERS
    )


# Re-run a transaction another one aborted, with exponential backoff and jitter.
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
        *,
        max_rows_per_transaction: int = MAX_ROWS_PER_TRANSACTION,
    ) -> None:
        self.config = config
        if client is None or write_client is None:
            client, write_client = bigquery_clients(config, client)
        self.client = client
        self.write_client = write_client
        self.project = config.project or client.project
        self.max_rows_per_transaction = max_rows_per_transaction
        self._schema_ready = False

    # -- names and queries ---------------------------------------------------------------

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.config.dataset}.{table}"

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
        for table, columns in TABLE_COLUMNS.items():
            ensure_table(
                self.client, self.table_id(table), columns, TABLE_LAYOUTS[table], self.config
            )
        if ensure_table(
            self.client, self.table_id(FENCE_TABLE), FENCE_COLUMNS, TableLayout(), self.config
        ):
            kinds = ", ".join(string_literal(kind.value) for kind in BatchKind)
            fence = self._sql_table(FENCE_TABLE)
            self._rows(
                f"INSERT INTO {fence} (kind) SELECT k FROM UNNEST([{kinds}]) AS k "
                f"WHERE k NOT IN (SELECT kind FROM {fence})"
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

    def load_batches(self, batches: Sequence[StagedBatch], dedupe_window_days: int) -> LoadResult:
        """Exactly once: ledger skip per batch, first copy per key within the load, and keys
        already in the table (within the window) skipped, all committed in one transaction."""
        with self._transient_errors():
            return self._load_batches(batches, dedupe_window_days)

    def _load_batches(self, batches: Sequence[StagedBatch], dedupe_window_days: int) -> LoadResult:
        distinct, kind = distinct_batches(batches)
        result = LoadResult(batches=len(distinct))
        if kind is None:
            return result
        spec = LOAD_SPECS[kind]
        for batch_id in distinct:
            string_literal(batch_id)  # fail before any work if an id could not be a literal
        self._ensure_schema()

        already = self.loaded_batch_ids(list(distinct))
        fresh = [batch for batch in distinct.values() if batch.batch_id not in already]
        result.batches_already_loaded = len(already)
        if not fresh:
            return result

        received: dict[str, int] = {}
        first_copies: dict[str, tuple[tuple[datetime, str, int], str, Any]] = {}
        position = 0
        for batch in fresh:
            rows = _DECODERS[kind](decompress(batch.ndjson_gz))
            received[batch.batch_id] = len(rows)
            for row in rows:
                key = getattr(row, spec.key)
                order = (row.received_at, batch.batch_id, position)
                position += 1
                current = first_copies.get(key)
                if current is None or order < current[0]:
                    first_copies[key] = (order, batch.batch_id, row)

        # One transaction per chunk of batches: keeps the keys array (a script variable, and so
        # part of the resolved query) well under BigQuery's query-size limits. Each chunk is
        # exactly-once on its own: its batches' events and ledger rows commit together.
        copies_by_batch: dict[str, list[tuple[str, Any]]] = {b.batch_id: [] for b in fresh}
        for _, batch_id, row in first_copies.values():
            copies_by_batch[batch_id].append((batch_id, row))
        loaded_at_by_batch: dict[str, datetime] = {}
        existing_keys: set[str] = set()
        chunks = chunked(
            fresh,
            max_weight=self.max_rows_per_transaction,
            weight=lambda batch: len(copies_by_batch[batch.batch_id]),
        )
        for chunk in chunks:
            staging = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            self._stage(spec, staging, [c for b in chunk for c in copies_by_batch[b.batch_id]])
            try:
                loaded_ids, existing, loaded_at = _CONFLICT_RETRY(self._commit_load)(
                    spec, staging, chunk, received, dedupe_window_days
                )
            finally:
                self.client.delete_table(self.table_id(staging), not_found_ok=True)
            existing_keys |= existing
            loaded_at_by_batch.update(dict.fromkeys(loaded_ids, loaded_at))

        inserted_by_batch: dict[str, int] = dict.fromkeys(loaded_at_by_batch, 0)
        latencies: list[float] = []
        for key, (_, batch_id, row) in first_copies.items():
            if batch_id not in inserted_by_batch or key in existing_keys:
                continue
            inserted_by_batch[batch_id] += 1
            if spec.measure_latency and row.sent_at is not None:
                latencies.append((loaded_at_by_batch[batch_id] - row.sent_at).total_seconds())
        for batch in fresh:
            if batch.batch_id not in inserted_by_batch:  # another load committed it first
                result.batches_already_loaded += 1
                continue
            inserted = inserted_by_batch[batch.batch_id]
            result.rows_declared += batch.row_count
            result.rows_received += received[batch.batch_id]
            result.rows_inserted += inserted
            result.duplicates_skipped += received[batch.batch_id] - inserted
            result.loaded_batch_ids.append(batch.batch_id)
        if latencies:
            result.seconds_from_sent_at_p50 = median(latencies)
            result.seconds_from_sent_at_max = max(latencies)
        return result

    def _stage(self, spec: LoadSpec, staging: str, rows: Sequence[tuple[str, Any]]) -> None:
        """Write the load's rows to a fresh staging table: one PENDING stream, one commit."""
        messages = staging_rows(spec.kind)
        table = bigquery.Table(
            self.table_id(staging),
            schema=[bigquery.SchemaField(name, kind) for name, kind in messages.fields],
        )
        table.expires = datetime.now(UTC) + STAGING_EXPIRATION
        self.client.create_table(table)
        serialized = serialize(messages, rows)
        if serialized:
            table_path = f"projects/{self.project}/datasets/{self.config.dataset}/tables/{staging}"
            write_committed(self.write_client, table_path, messages, serialized)

    def _commit_load(
        self,
        spec: LoadSpec,
        staging: str,
        fresh: Sequence[StagedBatch],
        received: dict[str, int],
        dedupe_window_days: int,
    ) -> tuple[list[str], set[str], datetime]:
        """The transaction: fence, ledger re-check, dedupe against the table, insert, ledger."""
        script = load_script(
            spec,
            self._sql_table,
            staging,
            FENCE_TABLE,
            LOADED_BATCHES_TABLE,
            fresh,
            received,
            dedupe_window_days,
        )
        rows = self._rows(script)
        fresh_ids, existing, loaded_at = rows[-1]
        return list(fresh_ids or []), set(existing or []), loaded_at

    # -- aggregates ----------------------------------------------------------------------

    def _refresh_day(self, table: str, day: date, insert_select: str) -> int:
        """Replace one day of an aggregate in a transaction; returns the day's rows."""
        self._ensure_schema()
        target = self._sql_table(table)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        select = insert_select.format(
            day=date_literal(day),
            events=self._sql_table(EVENTS_TABLE),
            start=timestamp_literal(start),
            end=timestamp_literal(start + timedelta(days=1)),
        )
        script = f"""
BEGIN TRANSACTION;
DELETE FROM {target} WHERE day = {date_literal(day)};
{select};
COMMIT TRANSACTION;
SELECT COUNT(*) FROM {target} WHERE day = {date_literal(day)};
"""
        rows = _CONFLICT_RETRY(self._rows)(script)
        return int(rows[-1][0]) if rows else 0

    def refresh_daily_event_counts(self, day: date) -> int:
        return self._refresh_day(
            DAILY_EVENT_COUNTS_TABLE,
            day,
            f"INSERT INTO {self._sql_table(DAILY_EVENT_COUNTS_TABLE)} "
            "(day, type, event, events, users, updated_at) "
            "SELECT {day}, type, event, COUNT(*), "
            "COUNT(DISTINCT COALESCE(user_id, anonymous_id)), CURRENT_TIMESTAMP() "
            "FROM {events} WHERE `timestamp` >= {start} AND `timestamp` < {end} "
            "GROUP BY type, event",
        )

    def refresh_daily_active_users(self, day: date) -> int:
        """One row per day that has events; a day without events gets no row."""
        return self._refresh_day(
            DAILY_ACTIVE_USERS_TABLE,
            day,
            f"INSERT INTO {self._sql_table(DAILY_ACTIVE_USERS_TABLE)} "
            "(day, active_users, identified_users, anonymous_users, updated_at) "
            "SELECT {day}, COUNT(DISTINCT COALESCE(user_id, anonymous_id)), "
            "COUNT(DISTINCT user_id), COUNT(DISTINCT IF(user_id IS NULL, anonymous_id, NULL)), "
            "CURRENT_TIMESTAMP() "
            "FROM {events} WHERE `timestamp` >= {start} AND `timestamp` < {end} "
            "HAVING COUNT(*) > 0",
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
            if self.config.uses_emulator:
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
