"""The dataset's tables on BigQuery: types, partitioning and clustering, additive migrations.

Tables are created through the API, never by DDL: bqemulator drops the partitioning and
clustering of DDL-created tables. A column the contract gains is added as NULLABLE; nothing is
ever dropped or retyped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from google.api_core import exceptions as google_exceptions
from google.cloud import bigquery

from analytics_pipeline.warehouse.bigquery.config import BigQueryConfig
from analytics_pipeline.warehouse.tables import (
    ACTIVE_USERS_DELTAS_COLUMNS,
    ACTIVE_USERS_DELTAS_TABLE,
    DAILY_ACTIVE_USERS_TABLE,
    DAILY_EVENT_COUNTS_TABLE,
    EVENT_COUNT_DELTAS_COLUMNS,
    EVENT_COUNT_DELTAS_TABLE,
    Column,
    TableLayout,
)

DELTA_TABLES: dict[str, tuple[tuple[Column, ...], TableLayout]] = {
    EVENT_COUNT_DELTAS_TABLE: (EVENT_COUNT_DELTAS_COLUMNS, TableLayout("day", ("type", "event"))),
    ACTIVE_USERS_DELTAS_TABLE: (ACTIVE_USERS_DELTAS_COLUMNS, TableLayout("day")),
}
# view -> its query ({deltas} is the delta table's id); column names as the DuckDB tables'.
AGGREGATE_VIEWS: dict[str, tuple[str, str]] = {
    DAILY_EVENT_COUNTS_TABLE: (
        EVENT_COUNT_DELTAS_TABLE,
        "SELECT day, type, event, SUM(events) AS events, SUM(users) AS users, "
        "MAX(loaded_at) AS updated_at FROM `{deltas}` GROUP BY day, type, event "
        "HAVING SUM(events) > 0",
    ),
    DAILY_ACTIVE_USERS_TABLE: (
        ACTIVE_USERS_DELTAS_TABLE,
        "SELECT day, SUM(active_users) AS active_users, SUM(identified_users) AS "
        "identified_users, SUM(anonymous_users) AS anonymous_users, MAX(loaded_at) AS "
        "updated_at FROM `{deltas}` GROUP BY day HAVING SUM(active_users) > 0",
    ),
}


def schema_fields(columns: Iterable[Column]) -> list[bigquery.SchemaField]:
    # REQUIRED only where the table says NOT NULL; additive changes add NULLABLE columns.
    return [
        bigquery.SchemaField(
            column.name, column.bigquery_type, mode="REQUIRED" if column.not_null else "NULLABLE"
        )
        for column in columns
    ]


def table_definition(
    table_id: str, columns: Sequence[Column], layout: TableLayout, config: BigQueryConfig
) -> bigquery.Table:
    """The table as created: partitioning, clustering and the optional settings."""
    definition = bigquery.Table(table_id, schema=schema_fields(columns))
    if layout.partition_column:
        expiration = config.partition_expiration_days if layout.expires else None
        definition.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY,
            field=layout.partition_column,
            expiration_ms=expiration * 86_400_000 if expiration else None,
        )
        definition.require_partition_filter = (
            layout.require_partition_filter and config.require_partition_filter
        )
    if layout.clustering:
        definition.clustering_fields = list(layout.clustering)
    return definition


def ensure_view(client: bigquery.Client, view_id: str, query: str) -> None:
    """Create the view when missing; a table of that name (the layout before incremental
    aggregates) holds derived data only, and is replaced."""
    try:
        existing = client.get_table(view_id)
    except google_exceptions.NotFound:
        existing = None
    if existing is not None and existing.table_type == "VIEW":
        return
    if existing is not None:
        client.delete_table(view_id)
    view = bigquery.Table(view_id)
    view.view_query = query
    with contextlib.suppress(google_exceptions.Conflict):  # another process was first
        client.create_table(view)


def ensure_table(
    client: bigquery.Client,
    table_id: str,
    columns: Sequence[Column],
    layout: TableLayout,
    config: BigQueryConfig,
) -> bool:
    """Create the table when missing, else add missing columns. True when it was created."""
    try:
        existing = client.get_table(table_id)
    except google_exceptions.NotFound:
        try:
            client.create_table(table_definition(table_id, columns, layout, config))
            return True
        except google_exceptions.Conflict:  # another process created it just now
            return False
    present = {field.name for field in existing.schema}
    missing = [column for column in columns if column.name not in present]
    if missing:
        if config.uses_emulator:  # bqemulator needs the DDL as well as the API call
            for column in missing:
                client.query(
                    f"ALTER TABLE `{table_id}` ADD COLUMN IF NOT EXISTS "
                    f"`{column.name}` {column.bigquery_type}"
                ).result()
        existing.schema = [
            *existing.schema,
            *(bigquery.SchemaField(c.name, c.bigquery_type) for c in missing),
        ]
        client.update_table(existing, ["schema"])
    return False
