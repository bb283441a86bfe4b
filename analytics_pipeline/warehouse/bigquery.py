"""The production warehouse: BigQuery, loaded through the Storage Write API, exactly once.

Write path, per `load_batches` call (one Dagster run, one kind, usually one day):

1. The ledger is asked which batch ids are already loaded; those are skipped whole.
2. The remaining batches are gunzipped and decoded here; within the load the first copy of each
   key wins, by (received_at, batch id, position): the rule DuckDB applies.
3. Those rows go into a fresh per-load staging table through a PENDING write stream with
   explicit offsets, finalized and committed in one BatchCommitWriteStreams call: the staging
   table holds the whole load or nothing (a retried append is refused by its offset).
4. One multi-statement transaction moves them: it updates a one-row fence (so two loads of the
   same kind conflict and one retries instead of both passing the checks), re-reads the ledger,
   looks up which staged keys `events` already holds within the dedupe window (the keys and the
   window bounds are script variables read from the staging table, i.e. constants to the
   planner, so the partition filter and clustering prune), inserts the rest and writes the
   ledger rows. COMMIT makes events and ledger visible together; a crash anywhere before it
   leaves neither, a crash after it only causes an SQS redelivery that the ledger skips.

Quotas at one load every 5 s per day partition, all day: no load jobs (1,500 per table per day
would be gone in two hours); the only DML into `events` is INSERT (mutating-DML concurrency
limits apply to UPDATE/DELETE/MERGE; the fence's UPDATE hits a one-row table, and loads of the
same kind are meant to serialise on it); Storage Write API: one stream created and committed per
load, far below the stream-creation quotas. Costs are worked out in the README.

Emulator (bqemulator 1.4.0) differences handled here, real-API code kept: query parameters do not
work inside multi-statement scripts, so scripts take values as script variables read from tables
or as literals built from validated values (never event content); the AppendRows request carries
`write_stream` every time; one stream per BatchCommit; a commit answered INVALID_STREAM_STATE
"state=COMMITTED" counts as done; with an emulator endpoint new columns are also added by DDL.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from statistics import median
from typing import Any, TypeVar

import msgspec
from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from analytics_pipeline.contract.batches import (
    BatchKind,
    decode_event_rows,
    decode_quarantine_rows,
    decompress,
)
from analytics_pipeline.contract.rows import EVENT_COLUMNS, QUARANTINE_COLUMNS, QuarantineRow
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import (
    ALL_TABLES,
    DAILY_ACTIVE_USERS_TABLE,
    DAILY_EVENT_COUNTS_TABLE,
    EVENTS_TABLE,
    LOADED_BATCHES_TABLE,
    QUARANTINE_TABLE,
    LoadResult,
    QueryResult,
    StagedBatch,
    distinct_batches,
)
from analytics_pipeline.warehouse.duckdb import LOADED_BATCHES_COLUMNS, TABLE_COLUMNS, Column

FENCE_TABLE = "load_fence"
EMULATOR_PROJECT = "local-project"  # as in local/bigquery_emulator.py: the emulator's default
STAGING_PREFIX = "_staging_load_"
STAGING_EXPIRATION = timedelta(days=1)  # a crashed load's staging table cleans itself up
# SQS keeps a message 14 days at most (DLQ redrive keeps the first enqueue time), so no batch
# can come back later than that: ledger look-ups read only this many days of partitions.
LEDGER_LOOKBACK_DAYS = 15
APPEND_REQUEST_BYTES = 8 * 1024 * 1024
# Keys per load transaction: 20,000 x ~40 B keeps the script's keys array under 1 MB.
MAX_ROWS_PER_TRANSACTION = 20_000  # AppendRows requests are limited to 10 MB
QUERY_TIMEOUT_SECONDS = 300.0
_CONFLICT_RETRIES = 8
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
_SAFE_LITERAL = re.compile(r"[A-Za-z0-9 _.:/+=@-]*")
_BIGQUERY_TYPES = {
    "VARCHAR": "STRING",
    "TIMESTAMP": "TIMESTAMP",
    "JSON": "JSON",
    "BIGINT": "INT64",
    "DATE": "DATE",
}

T = TypeVar("T")


@dataclass(frozen=True)
class TableLayout:
    """How a table is partitioned and clustered (serving its common filters)."""

    partition_column: str | None = None
    clustering: tuple[str, ...] = ()
    expires: bool = False  # subject to ANALYTICS_BIGQUERY_PARTITION_EXPIRATION_DAYS
    require_partition_filter: bool = False  # subject to the setting


# events: analysts filter by day and event name; the per-load dedupe filters by message_id.
# Clustering keeps per-block min/max of both columns, so blocks of one event hold a narrow
# message_id range and the dedupe's `message_id IN UNNEST(keys)` can skip the others.
TABLE_LAYOUTS: dict[str, TableLayout] = {
    EVENTS_TABLE: TableLayout("timestamp", ("event", "message_id"), True, True),
    # No required partition filter here: replay looks quarantine rows up by reason and id.
    QUARANTINE_TABLE: TableLayout("received_at", ("reason", "quarantine_id"), True),
    LOADED_BATCHES_TABLE: TableLayout("loaded_at", ("batch_id",)),
    DAILY_EVENT_COUNTS_TABLE: TableLayout("day", ("type", "event")),
    DAILY_ACTIVE_USERS_TABLE: TableLayout(),
}
FENCE_COLUMNS = (
    Column("kind", "VARCHAR", not_null=True),
    Column("load_id", "VARCHAR"),
    Column("updated_at", "TIMESTAMP"),
)


@dataclass(frozen=True)
class _LoadSpec:
    kind: BatchKind
    table: str
    wire_columns: tuple[str, ...]
    key: str
    window_column: str
    measure_latency: bool
    decode: Callable[[bytes], list[Any]]


_LOAD_SPECS = {
    BatchKind.EVENTS: _LoadSpec(
        BatchKind.EVENTS,
        EVENTS_TABLE,
        EVENT_COLUMNS,
        "message_id",
        "timestamp",
        True,
        decode_event_rows,
    ),
    BatchKind.QUARANTINE: _LoadSpec(
        BatchKind.QUARANTINE,
        QUARANTINE_TABLE,
        QUARANTINE_COLUMNS,
        "quarantine_id",
        "received_at",
        False,
        decode_quarantine_rows,
    ),
}


@dataclass(frozen=True)
class BigQueryConfig:
    project: str
    dataset: str = "analytics"
    location: str = "US"
    emulator_rest: str | None = None  # e.g. http://127.0.0.1:9050 (bqemulator); never in prod
    emulator_grpc: str | None = None  # e.g. 127.0.0.1:9060
    partition_expiration_days: int | None = None
    require_partition_filter: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> BigQueryConfig:
        emulator_rest = settings.bigquery_emulator_rest or None
        return cls(
            project=settings.bigquery_project or (EMULATOR_PROJECT if emulator_rest else ""),
            dataset=settings.bigquery_dataset,
            location=settings.bigquery_location,
            emulator_rest=emulator_rest,
            emulator_grpc=settings.bigquery_emulator_grpc or None,
            partition_expiration_days=settings.bigquery_partition_expiration_days,
            require_partition_filter=settings.bigquery_require_partition_filter,
        )

    @property
    def uses_emulator(self) -> bool:
        return self.emulator_rest is not None


def bigquery_clients(
    config: BigQueryConfig, client: bigquery.Client | None = None
) -> tuple[bigquery.Client, BigQueryWriteClient]:
    """The query client and the Storage Write client, sharing one set of credentials.

    With an emulator endpoint: anonymous credentials, REST at `emulator_rest`, gRPC in plain
    text at `emulator_grpc`. Otherwise the given client (dagster-gcp's BigQueryResource) or
    application default credentials.
    """
    if config.uses_emulator:
        import grpc
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        query_client = bigquery.Client(
            project=config.project,
            location=config.location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=config.emulator_rest),
        )
        if not config.emulator_grpc:
            raise ValueError("an emulator needs both its REST and its gRPC endpoint")
        channel = grpc.insecure_channel(config.emulator_grpc)
        return query_client, BigQueryWriteClient(
            transport=BigQueryWriteGrpcTransport(channel=channel)
        )
    query_client = client or bigquery.Client(
        project=config.project or None, location=config.location
    )
    return query_client, BigQueryWriteClient(credentials=query_client._credentials)


def _bigquery_type(column: Column) -> str:
    return _BIGQUERY_TYPES[column.sql_type]


def _schema(columns: Iterable[Column]) -> list[bigquery.SchemaField]:
    # REQUIRED only where DuckDB says NOT NULL; additive changes add NULLABLE columns.
    return [
        bigquery.SchemaField(
            column.name, _bigquery_type(column), mode="REQUIRED" if column.not_null else "NULLABLE"
        )
        for column in columns
    ]


def _string_literal(value: str) -> str:
    """A quoted GoogleSQL literal for ids we generate; anything unusual is refused, not escaped."""
    if not _SAFE_LITERAL.fullmatch(value):
        raise ValueError(f"refusing to put {value!r} into SQL: unexpected characters")
    return f"'{value}'"


def _timestamp_literal(moment: datetime) -> str:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"TIMESTAMP '{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def _date_literal(day: date) -> str:
    return f"DATE '{day.isoformat()}'"


def _micros(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _is_conflict(error: Exception) -> bool:
    text = str(error).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)


def _naive_utc(value: Any) -> Any:
    """DuckDB's representation: TIMESTAMP values as naive UTC datetimes."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class _StagingRows:
    """The staging table's proto message type, built from its schema at run time."""

    def __init__(self, name: str, fields: Sequence[tuple[str, str]]) -> None:
        proto_file = descriptor_pb2.FileDescriptorProto(
            name=f"{name}.proto", package="analytics_pipeline", syntax="proto2"
        )
        message = proto_file.message_type.add(name=name)
        kinds = descriptor_pb2.FieldDescriptorProto
        for number, (field_name, field_type) in enumerate(fields, start=1):
            message.field.add(
                name=field_name,
                number=number,
                type=kinds.TYPE_INT64
                if field_type in ("TIMESTAMP", "INT64")
                else kinds.TYPE_STRING,
                label=kinds.LABEL_OPTIONAL,
            )
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto_file)
        descriptor = pool.FindMessageTypeByName(f"analytics_pipeline.{name}")
        self.message_class = message_factory.GetMessageClass(descriptor)
        self.descriptor = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(self.descriptor)
        self.fields = tuple(fields)


@cache
def _staging_layout(kind: BatchKind) -> tuple[tuple[tuple[str, str], ...], _StagingRows]:
    """Staging columns: the wire columns (JSON travels as text) plus the batch it came from."""
    spec = _LOAD_SPECS[kind]
    by_name = {column.name: column for column in TABLE_COLUMNS[spec.table]}
    wire = tuple(
        (name, "STRING" if by_name[name].sql_type == "JSON" else _bigquery_type(by_name[name]))
        for name in spec.wire_columns
    )
    fields = (*wire, ("staged_batch_id", "STRING"))
    return fields, _StagingRows(f"Staged{kind.value.title()}", fields)


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

    def _sql_table(self, table: str) -> str:
        return f"`{self.table_id(table)}`"

    def _run(
        self, sql: str, parameters: Sequence[Any] | None = None, *, dry_run: bool = False
    ) -> bigquery.QueryJob:
        job_config = bigquery.QueryJobConfig(
            default_dataset=f"{self.project}.{self.config.dataset}",
            query_parameters=[_parameter(value) for value in parameters or ()],
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
        """Mark errors that say nothing about the batch (the loader then retries the run)."""
        try:
            yield
        except _TRANSIENT as error:
            error.transient = True  # type: ignore[attr-defined]
            raise
        except google_exceptions.GoogleAPICallError as error:
            if _is_conflict(error):
                error.transient = True  # type: ignore[attr-defined]
            raise

    def _retry_conflicts(self, action: Callable[[], T]) -> T:
        """Re-run a transaction another one aborted (BigQuery cancels the later of two)."""
        delay = 0.2
        for attempt in range(_CONFLICT_RETRIES):
            try:
                return action()
            except google_exceptions.GoogleAPICallError as error:
                if attempt == _CONFLICT_RETRIES - 1 or not _is_conflict(error):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

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
            self._ensure_table(table, columns, TABLE_LAYOUTS[table])
        if self._ensure_table(FENCE_TABLE, FENCE_COLUMNS, TableLayout()):
            kinds = ", ".join(_string_literal(kind.value) for kind in BatchKind)
            fence = self._sql_table(FENCE_TABLE)
            self._rows(
                f"INSERT INTO {fence} (kind) SELECT k FROM UNNEST([{kinds}]) AS k "
                f"WHERE k NOT IN (SELECT kind FROM {fence})"
            )
        self._schema_ready = True

    def table_definition(
        self, table: str, columns: Sequence[Column], layout: TableLayout
    ) -> bigquery.Table:
        """The table as created: partitioning, clustering and the optional settings."""
        definition = bigquery.Table(self.table_id(table), schema=_schema(columns))
        if layout.partition_column:
            expiration = self.config.partition_expiration_days if layout.expires else None
            definition.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY,
                field=layout.partition_column,
                expiration_ms=expiration * 86_400_000 if expiration else None,
            )
            definition.require_partition_filter = (
                layout.require_partition_filter and self.config.require_partition_filter
            )
        if layout.clustering:
            definition.clustering_fields = list(layout.clustering)
        return definition

    def _ensure_table(self, table: str, columns: Sequence[Column], layout: TableLayout) -> bool:
        """Create the table through the API when missing (DDL would lose partitioning on the
        emulator), else add missing columns. True when it was created."""
        try:
            existing = self.client.get_table(self.table_id(table))
        except google_exceptions.NotFound:
            definition = self.table_definition(table, columns, layout)
            try:
                self.client.create_table(definition)
                return True
            except google_exceptions.Conflict:  # another process created it just now
                return False
        present = {field.name for field in existing.schema}
        missing = [column for column in columns if column.name not in present]
        if missing:
            if self.config.uses_emulator:  # bqemulator needs the DDL as well as the API call
                for column in missing:
                    self._rows(
                        f"ALTER TABLE {self._sql_table(table)} ADD COLUMN IF NOT EXISTS "
                        f"`{column.name}` {_bigquery_type(column)}"
                    )
            # Additive only: columns added to a table with rows are NULLABLE.
            existing.schema = [
                *existing.schema,
                *(bigquery.SchemaField(c.name, _bigquery_type(c)) for c in missing),
            ]
            self.client.update_table(existing, ["schema"])
        return False

    # -- loading -------------------------------------------------------------------------

    def loaded_batch_ids(self, batch_ids: Sequence[str]) -> set[str]:
        if not batch_ids:
            return set()
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
        spec = _LOAD_SPECS[kind]
        for batch_id in distinct:
            _string_literal(batch_id)  # fail before any work if an id could not be a literal
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
            rows = spec.decode(decompress(batch.ndjson_gz))
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
        copies_by_batch: dict[str, list[tuple[Any, str, Any]]] = {b.batch_id: [] for b in fresh}
        for copy in first_copies.values():
            copies_by_batch[copy[1]].append(copy)
        loaded_at_by_batch: dict[str, datetime] = {}
        existing_keys: set[str] = set()
        for chunk in _chunks(fresh, copies_by_batch, MAX_ROWS_PER_TRANSACTION):
            staging = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
            self._stage(spec, staging, [c for b in chunk for c in copies_by_batch[b.batch_id]])
            try:
                loaded_ids, existing, loaded_at = self._retry_conflicts(
                    lambda chunk=chunk, staging=staging: self._commit_load(
                        spec, staging, chunk, received, dedupe_window_days
                    )
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

    def _stage(self, spec: _LoadSpec, staging: str, copies: Iterable[tuple[Any, str, Any]]) -> None:
        """Write the load's rows to a fresh staging table: one PENDING stream, one commit."""
        fields, proto = _staging_layout(spec.kind)
        table = bigquery.Table(
            self.table_id(staging),
            schema=[bigquery.SchemaField(name, field_type) for name, field_type in fields],
        )
        table.expires = datetime.now(UTC) + STAGING_EXPIRATION
        self.client.create_table(table)

        serialized: list[bytes] = []
        for _, batch_id, row in copies:
            message = proto.message_class()
            for name, field_type in fields[:-1]:
                value = getattr(row, name)
                if name == "batch_id":
                    value = value or batch_id
                if value is None:
                    continue
                if isinstance(value, msgspec.Raw):
                    if bytes(value) == b"null":
                        continue
                    value = bytes(value).decode()
                elif field_type == "TIMESTAMP":
                    value = _micros(value)
                setattr(message, name, value)
            message.staged_batch_id = batch_id
            serialized.append(message.SerializeToString())
        if not serialized:
            return

        parent = f"projects/{self.project}/datasets/{self.config.dataset}/tables/{staging}"
        stream = self.write_client.create_write_stream(
            parent=parent,
            write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING),
        )
        # A request stream carries no routing field the client could read, so the routing
        # header is set by hand (as the library's own AppendRowsStream helper does).
        for response in self.write_client.append_rows(
            iter(_append_requests(stream.name, proto, serialized)),
            metadata=(("x-goog-request-params", f"write_stream={stream.name}"),),
        ):
            _check_append(response)
        self.write_client.finalize_write_stream(name=stream.name)
        try:
            commit = self.write_client.batch_commit_write_streams(
                types.BatchCommitWriteStreamsRequest(parent=parent, write_streams=[stream.name])
            )
        except google_exceptions.FailedPrecondition as error:  # emulator: already committed
            if "state=COMMITTED" not in str(error):
                raise
            return
        if commit.stream_errors:
            raise RuntimeError(f"staging commit failed: {list(commit.stream_errors)}")

    def _commit_load(
        self,
        spec: _LoadSpec,
        staging: str,
        fresh: Sequence[StagedBatch],
        received: dict[str, int],
        dedupe_window_days: int,
    ) -> tuple[list[str], set[str], datetime]:
        """The transaction: fence, ledger re-check, dedupe against the table, insert, ledger."""
        table, key, window = self._sql_table(spec.table), spec.key, spec.window_column
        stage, ledger = self._sql_table(staging), self._sql_table(LOADED_BATCHES_TABLE)
        batches = ", ".join(
            f"STRUCT({_string_literal(batch.batch_id)} AS batch_id, "
            f"{_date_literal(date.fromisoformat(batch.day))} AS day, "
            f"{int(batch.row_count)} AS rows_declared, "
            f"{int(received[batch.batch_id])} AS rows_received)"
            for batch in fresh
        )
        columns = [*spec.wire_columns, "loaded_at"]
        json_columns = {
            column.name for column in TABLE_COLUMNS[spec.table] if column.sql_type == "JSON"
        }
        select_list = ", ".join(
            f"PARSE_JSON(s.`{name}`, wide_number_mode => 'round')"
            if name in json_columns
            else f"s.`{name}`"
            for name in spec.wire_columns
        )
        window_days = int(dedupe_window_days)
        script = f"""
DECLARE v_loaded_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP();
DECLARE v_batches ARRAY<STRUCT<batch_id STRING, day DATE, rows_declared INT64,
  rows_received INT64>> DEFAULT [{batches}];
DECLARE v_staged STRUCT<keys ARRAY<STRING>, low TIMESTAMP, high TIMESTAMP> DEFAULT (
  SELECT AS STRUCT IFNULL(ARRAY_AGG(`{key}`), []) AS keys,
    TIMESTAMP_SUB(MIN(`{window}`), INTERVAL {window_days} DAY) AS low,
    TIMESTAMP_ADD(MAX(`{window}`), INTERVAL {window_days} DAY) AS high
  FROM {stage});
DECLARE v_fresh ARRAY<STRING>;
DECLARE v_existing ARRAY<STRING>;
BEGIN TRANSACTION;
UPDATE {self._sql_table(FENCE_TABLE)} SET load_id = {_string_literal(staging)},
  updated_at = v_loaded_at WHERE kind = {_string_literal(spec.kind.value)};
SET v_fresh = (
  SELECT IFNULL(ARRAY_AGG(b.batch_id), []) FROM UNNEST(v_batches) AS b
  WHERE b.batch_id NOT IN (
    SELECT l.batch_id FROM {ledger} AS l
    WHERE l.batch_id IN (SELECT x.batch_id FROM UNNEST(v_batches) AS x)
      AND l.loaded_at >= TIMESTAMP_SUB(v_loaded_at, INTERVAL {LEDGER_LOOKBACK_DAYS} DAY)));
SET v_existing = (
  SELECT IFNULL(ARRAY_AGG(DISTINCT t.`{key}`), []) FROM {table} AS t
  WHERE t.`{key}` IN UNNEST(v_staged.keys)
    AND t.`{window}` BETWEEN v_staged.low AND v_staged.high);
INSERT INTO {table} ({", ".join(f"`{name}`" for name in columns)})
SELECT {select_list}, v_loaded_at FROM {stage} AS s
WHERE s.staged_batch_id IN UNNEST(v_fresh) AND s.`{key}` NOT IN UNNEST(v_existing);
INSERT INTO {ledger} ({", ".join(f"`{c.name}`" for c in LOADED_BATCHES_COLUMNS)})
SELECT b.batch_id, {_string_literal(spec.kind.value)}, b.day, b.rows_declared,
  IFNULL(n.inserted, 0), b.rows_received - IFNULL(n.inserted, 0), v_loaded_at
FROM UNNEST(v_batches) AS b
LEFT JOIN (
  SELECT s.staged_batch_id, COUNT(*) AS inserted FROM {stage} AS s
  WHERE s.`{key}` NOT IN UNNEST(v_existing) GROUP BY s.staged_batch_id
) AS n ON n.staged_batch_id = b.batch_id
WHERE b.batch_id IN UNNEST(v_fresh);
COMMIT TRANSACTION;
SELECT v_fresh AS fresh, v_existing AS existing, v_loaded_at AS loaded_at;
"""
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
            day=_date_literal(day),
            events=self._sql_table(EVENTS_TABLE),
            start=_timestamp_literal(start),
            end=_timestamp_literal(start + timedelta(days=1)),
        )
        script = f"""
BEGIN TRANSACTION;
DELETE FROM {target} WHERE day = {_date_literal(day)};
{select};
COMMIT TRANSACTION;
SELECT COUNT(*) FROM {target} WHERE day = {_date_literal(day)};
"""
        rows = self._retry_conflicts(lambda: self._rows(script))
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
                    values[i] = _naive_utc(value)
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
        job = self._retry_conflicts(
            lambda: self._finished(
                f"UPDATE {self._sql_table(QUARANTINE_TABLE)} "
                "SET replayed_at = CURRENT_TIMESTAMP() "
                "WHERE replayed_at IS NULL AND quarantine_id IN UNNEST(?)",
                [list(quarantine_ids)],
            )
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
            columns=columns, rows=[tuple(_naive_utc(value) for value in row) for row in rows]
        )


def _chunks(
    batches: Sequence[StagedBatch],
    copies_by_batch: dict[str, list[Any]],
    max_rows: int,
) -> Iterator[list[StagedBatch]]:
    """Consecutive groups of whole batches of at most `max_rows` rows (or one bigger batch)."""
    chunk: list[StagedBatch] = []
    rows = 0
    for batch in batches:
        size = len(copies_by_batch[batch.batch_id])
        if chunk and rows + size > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(batch)
        rows += size
    if chunk:
        yield chunk


def _append_requests(
    stream: str, proto: _StagingRows, serialized: Sequence[bytes]
) -> Iterator[types.AppendRowsRequest]:
    """Requests under the 10 MB limit, each with its offset and the stream name (the emulator
    needs the name on every request; BigQuery accepts it)."""
    offset = 0
    while offset < len(serialized):
        chunk: list[bytes] = []
        size = 0
        while offset + len(chunk) < len(serialized) and (
            not chunk or size + len(serialized[offset + len(chunk)]) < APPEND_REQUEST_BYTES
        ):
            size += len(serialized[offset + len(chunk)])
            chunk.append(serialized[offset + len(chunk)])
        yield types.AppendRowsRequest(
            write_stream=stream,
            offset=offset,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=proto.descriptor),
                rows=types.ProtoRows(serialized_rows=chunk),
            ),
        )
        offset += len(chunk)


def _check_append(response: types.AppendRowsResponse) -> None:
    # ALREADY_EXISTS (6): this offset was appended by an earlier attempt: fine.
    if response.error and response.error.code and response.error.code != 6:
        raise RuntimeError(f"AppendRows failed: {response.error.message}")
    if response.row_errors:
        raise RuntimeError(f"AppendRows rejected rows: {list(response.row_errors)[:3]}")


def _parameter(value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    """A positional parameter (`?`) typed from the Python value; naive datetimes are UTC."""
    if isinstance(value, list | tuple):
        items = list(value)
        element = _parameter(items[0]).type_ if items else "STRING"
        return bigquery.ArrayQueryParameter(None, element, [_parameter(v).value for v in items])
    if isinstance(value, bool):
        return bigquery.ScalarQueryParameter(None, "BOOL", value)
    if isinstance(value, int):
        return bigquery.ScalarQueryParameter(None, "INT64", value)
    if isinstance(value, float):
        return bigquery.ScalarQueryParameter(None, "FLOAT64", value)
    if isinstance(value, Decimal):
        return bigquery.ScalarQueryParameter(None, "NUMERIC", value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return bigquery.ScalarQueryParameter(None, "TIMESTAMP", moment)
    if isinstance(value, date):
        return bigquery.ScalarQueryParameter(None, "DATE", value)
    if isinstance(value, bytes):
        return bigquery.ScalarQueryParameter(None, "BYTES", value)
    return bigquery.ScalarQueryParameter(None, "STRING", None if value is None else str(value))
