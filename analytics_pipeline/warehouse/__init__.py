"""Warehouses behind one protocol; `open_warehouse` is the one place that picks and configures
the one the settings name, for the Dagster resource and the CLI alike."""

from __future__ import annotations

from collections.abc import Callable

from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import (
    LoadResult,
    QueryResult,
    StagedBatch,
    TransientWarehouseError,
    Warehouse,
)


def _duckdb(settings: Settings) -> Warehouse:
    from analytics_pipeline.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(
        settings.duckdb_path, open_timeout_seconds=settings.warehouse_lock_wait_seconds
    )


def _bigquery(settings: Settings) -> Warehouse:
    from analytics_pipeline.warehouse.bigquery import BigQueryConfig, BigQueryWarehouse

    return BigQueryWarehouse(BigQueryConfig.from_settings(settings))


# ANALYTICS_WAREHOUSE value -> factory. Each imports its client library inside, so a DuckDB
# deployment never needs the Google libraries and a BigQuery one never imports DuckDB.
WAREHOUSE_FACTORIES: dict[str, Callable[[Settings], Warehouse]] = {
    "duckdb": _duckdb,
    "bigquery": _bigquery,
}


class UnknownWarehouseError(ValueError):
    """ANALYTICS_WAREHOUSE names a warehouse this version does not have."""


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse `ANALYTICS_WAREHOUSE` names, configured from the other settings."""
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
    "WAREHOUSE_FACTORIES",
    "LoadResult",
    "QueryResult",
    "StagedBatch",
    "TransientWarehouseError",
    "UnknownWarehouseError",
    "Warehouse",
    "open_warehouse",
]
