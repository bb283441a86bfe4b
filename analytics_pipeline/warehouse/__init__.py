"""Warehouses behind one protocol; `warehouse_from_settings` picks the configured one."""

from __future__ import annotations

from collections.abc import Callable

from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import (
    ALL_TABLES,
    DAILY_ACTIVE_USERS_TABLE,
    DAILY_EVENT_COUNTS_TABLE,
    EVENTS_TABLE,
    LOADED_BATCHES_TABLE,
    QUARANTINE_TABLE,
    SCHEMA,
    LoadResult,
    QueryResult,
    StagedBatch,
    Warehouse,
)
from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse, WarehouseBusyError


def _duckdb_from_settings(settings: Settings) -> Warehouse:
    return DuckDBWarehouse(
        settings.duckdb_path, open_timeout_seconds=settings.warehouse_lock_wait_seconds
    )


def _bigquery_from_settings(settings: Settings) -> Warehouse:
    from analytics_pipeline.warehouse.bigquery import BigQueryConfig, BigQueryWarehouse

    return BigQueryWarehouse(BigQueryConfig.from_settings(settings))


# ANALYTICS_WAREHOUSE value -> factory. Each imports its client libraries inside its factory, so
# the DuckDB path never needs the Google ones.
WAREHOUSE_FACTORIES: dict[str, Callable[[Settings], Warehouse]] = {
    "duckdb": _duckdb_from_settings,
    "bigquery": _bigquery_from_settings,
}


class UnknownWarehouseError(ValueError):
    """ANALYTICS_WAREHOUSE names a warehouse this version does not have."""


def warehouse_from_settings(settings: Settings) -> Warehouse:
    name = settings.warehouse.strip().lower()
    factory = WAREHOUSE_FACTORIES.get(name)
    if factory is None:
        supported = ", ".join(sorted(WAREHOUSE_FACTORIES))
        raise UnknownWarehouseError(
            f"ANALYTICS_WAREHOUSE={settings.warehouse!r} is not a known warehouse; "
            f"supported: {supported}"
        )
    return factory(settings)


__all__ = [
    "ALL_TABLES",
    "DAILY_ACTIVE_USERS_TABLE",
    "DAILY_EVENT_COUNTS_TABLE",
    "EVENTS_TABLE",
    "LOADED_BATCHES_TABLE",
    "QUARANTINE_TABLE",
    "SCHEMA",
    "WAREHOUSE_FACTORIES",
    "DuckDBWarehouse",
    "LoadResult",
    "QueryResult",
    "StagedBatch",
    "UnknownWarehouseError",
    "Warehouse",
    "WarehouseBusyError",
    "warehouse_from_settings",
]
