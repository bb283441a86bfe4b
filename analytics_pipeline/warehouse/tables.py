"""The warehouse's tables, declared once for every warehouse: names, columns, keys and layout.

Column types are written in DuckDB's names; `bigquery/schema.py` maps them to BigQuery's. The
layout (day partitioning and clustering) serves the common filters on BigQuery; DuckDB has no
such notion and relies on zone maps over the same columns instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.contract.rows import EVENT_COLUMNS, QUARANTINE_COLUMNS

SCHEMA = "analytics"
EVENTS_TABLE = "events"
QUARANTINE_TABLE = "events_quarantine"
LOADED_BATCHES_TABLE = "loaded_batches"
DAILY_EVENT_COUNTS_TABLE = "daily_event_counts"
DAILY_ACTIVE_USERS_TABLE = "daily_active_users"
ALL_TABLES = (
    EVENTS_TABLE,
    QUARANTINE_TABLE,
    LOADED_BATCHES_TABLE,
    DAILY_EVENT_COUNTS_TABLE,
    DAILY_ACTIVE_USERS_TABLE,
)


# DuckDB's type names (as the columns declare them) -> BigQuery's.
BIGQUERY_TYPES = {
    "VARCHAR": "STRING",
    "TIMESTAMP": "TIMESTAMP",
    "JSON": "JSON",
    "BIGINT": "INT64",
    "DATE": "DATE",
}


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # DuckDB's type name: VARCHAR, TIMESTAMP, JSON, BIGINT, DATE
    not_null: bool = False

    @property
    def bigquery_type(self) -> str:
        return BIGQUERY_TYPES[self.sql_type]


EVENT_TABLE_COLUMNS: tuple[Column, ...] = (
    Column("message_id", "VARCHAR", not_null=True),
    Column("type", "VARCHAR", not_null=True),
    Column("event", "VARCHAR"),
    Column("user_id", "VARCHAR"),
    Column("anonymous_id", "VARCHAR"),
    Column("group_id", "VARCHAR"),
    Column("previous_id", "VARCHAR"),
    Column("timestamp", "TIMESTAMP", not_null=True),
    Column("original_timestamp", "TIMESTAMP"),
    Column("sent_at", "TIMESTAMP"),
    Column("received_at", "TIMESTAMP", not_null=True),
    Column("properties", "JSON"),
    Column("context", "JSON"),
    Column("traits", "JSON"),
    Column("batch_id", "VARCHAR"),
    Column("loaded_at", "TIMESTAMP", not_null=True),
)

QUARANTINE_TABLE_COLUMNS: tuple[Column, ...] = (
    Column("quarantine_id", "VARCHAR", not_null=True),
    Column("reason", "VARCHAR", not_null=True),
    Column("detail", "VARCHAR"),
    Column("payload", "VARCHAR"),
    Column("message_id", "VARCHAR"),
    Column("received_at", "TIMESTAMP", not_null=True),
    Column("source", "VARCHAR"),
    Column("batch_id", "VARCHAR"),
    Column("loaded_at", "TIMESTAMP", not_null=True),
    Column("replayed_at", "TIMESTAMP"),  # set by `quarantine replay` once its events are resent
)

LOADED_BATCHES_COLUMNS: tuple[Column, ...] = (
    Column("batch_id", "VARCHAR", not_null=True),
    Column("kind", "VARCHAR", not_null=True),
    Column("day", "DATE"),
    Column("rows_declared", "BIGINT"),
    Column("rows_inserted", "BIGINT"),
    Column("duplicates_skipped", "BIGINT"),
    Column("loaded_at", "TIMESTAMP", not_null=True),
    Column("load_id", "VARCHAR"),  # the load that committed it (the loader's recovery asks)
)

DAILY_EVENT_COUNTS_COLUMNS: tuple[Column, ...] = (
    Column("day", "DATE", not_null=True),
    Column("type", "VARCHAR"),
    Column("event", "VARCHAR"),
    Column("events", "BIGINT"),
    Column("users", "BIGINT"),
    Column("updated_at", "TIMESTAMP"),
)

DAILY_ACTIVE_USERS_COLUMNS: tuple[Column, ...] = (
    Column("day", "DATE", not_null=True),
    Column("active_users", "BIGINT"),
    Column("identified_users", "BIGINT"),
    Column("anonymous_users", "BIGINT"),
    Column("updated_at", "TIMESTAMP"),
)

# The aggregates on BigQuery: every load appends the deltas it makes (through a write stream
# like its events: no DML, no query); `daily_event_counts` and `daily_active_users` are views
# summing them (`bigquery/schema.py`). Declared here so the cost model can size their rows.
EVENT_COUNT_DELTAS_TABLE = "daily_event_counts_deltas"
ACTIVE_USERS_DELTAS_TABLE = "daily_active_users_deltas"
EVENT_COUNT_DELTAS_COLUMNS: tuple[Column, ...] = (
    Column("day", "DATE", not_null=True),
    Column("type", "VARCHAR"),
    Column("event", "VARCHAR"),
    Column("events", "BIGINT"),
    Column("users", "BIGINT"),
    Column("loaded_at", "TIMESTAMP", not_null=True),
    Column("load_id", "VARCHAR"),
)
ACTIVE_USERS_DELTAS_COLUMNS: tuple[Column, ...] = (
    Column("day", "DATE", not_null=True),
    Column("active_users", "BIGINT"),
    Column("identified_users", "BIGINT"),
    Column("anonymous_users", "BIGINT"),
    Column("loaded_at", "TIMESTAMP", not_null=True),
    Column("load_id", "VARCHAR"),
)

TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    EVENTS_TABLE: EVENT_TABLE_COLUMNS,
    QUARANTINE_TABLE: QUARANTINE_TABLE_COLUMNS,
    LOADED_BATCHES_TABLE: LOADED_BATCHES_COLUMNS,
    DAILY_EVENT_COUNTS_TABLE: DAILY_EVENT_COUNTS_COLUMNS,
    DAILY_ACTIVE_USERS_TABLE: DAILY_ACTIVE_USERS_COLUMNS,
}
TABLE_PRIMARY_KEYS: dict[str, str] = {LOADED_BATCHES_TABLE: "batch_id"}


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


@dataclass(frozen=True)
class LoadSpec:
    """How one batch kind lands: its table, wire columns, dedupe key and window column."""

    kind: BatchKind
    table: str
    wire_columns: tuple[Column, ...]  # the table's columns that travel in the NDJSON
    key: str
    window_column: str
    measure_latency: bool

    @property
    def json_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.wire_columns if c.sql_type == "JSON")


def _wire_columns(
    table_columns: tuple[Column, ...], contract: tuple[str, ...]
) -> tuple[Column, ...]:
    """The table's columns for the contract's fields, checked at import."""
    by_name = {column.name: column for column in table_columns}
    missing = [name for name in contract if name not in by_name]
    if missing:
        raise RuntimeError(f"warehouse table has no column for contract fields {missing}")
    return tuple(by_name[name] for name in contract)


LOAD_SPECS: dict[BatchKind, LoadSpec] = {
    BatchKind.EVENTS: LoadSpec(
        kind=BatchKind.EVENTS,
        table=EVENTS_TABLE,
        wire_columns=_wire_columns(EVENT_TABLE_COLUMNS, EVENT_COLUMNS),
        key="message_id",
        window_column="timestamp",
        measure_latency=True,
    ),
    BatchKind.QUARANTINE: LoadSpec(
        kind=BatchKind.QUARANTINE,
        table=QUARANTINE_TABLE,
        wire_columns=_wire_columns(QUARANTINE_TABLE_COLUMNS, QUARANTINE_COLUMNS),
        key="quarantine_id",
        window_column="received_at",
        measure_latency=False,
    ),
}
