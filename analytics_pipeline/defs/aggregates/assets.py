"""Daily aggregates over `events`, kept current by every load (incrementally, in the same commit
as the events they count: see `loader/plan.py`); the load loop materializes their day
partitions. Materializing one here recomputes the day from `events`: the repair, and what a
backfill over a date range runs, one scan of the day each (on BigQuery, billed).
"""

from collections.abc import Callable
from datetime import date

import dagster as dg

from analytics_pipeline.defs.ingest.assets import DAILY_ACTIVE_USERS, DAILY_EVENT_COUNTS, EVENTS
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import WarehouseResource
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import Warehouse


def _aggregate_asset(
    name: str,
    description: str,
    refresh: Callable[[Warehouse, date], int],
    settings: Settings,
    partitions_def: dg.PartitionsDefinition,
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        deps=[EVENTS],
        partitions_def=partitions_def,
        group_name="aggregates",
        kinds={settings.warehouse, "sql"},
        description=description,
        retry_policy=WAREHOUSE_RETRY_POLICY,
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        store = warehouse.get_warehouse()
        store.ensure_schema()
        rows = refresh(store, date.fromisoformat(context.partition_key))
        return dg.MaterializeResult(metadata={"rows": rows})

    return _asset


# name -> (description, how the warehouse refreshes one day of it)
AGGREGATES: dict[str, tuple[str, Callable[[Warehouse, date], int]]] = {
    DAILY_EVENT_COUNTS.path[-1]: (
        "Events and distinct users per day, type and event name.",
        lambda store, day: store.refresh_daily_event_counts(day),
    ),
    DAILY_ACTIVE_USERS.path[-1]: (
        "Distinct active users per day (identified and anonymous).",
        lambda store, day: store.refresh_daily_active_users(day),
    ),
}


def aggregates_definitions(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            _aggregate_asset(name, description, refresh, settings, partitions_def)
            for name, (description, refresh) in AGGREGATES.items()
        ]
    )
