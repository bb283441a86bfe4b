"""Daily aggregates over `events`, kept current by every load (incrementally, in the same commit
as the events they count: see `loader/plan.py`); the load loop materializes their day
partitions. Materializing one here recomputes the day from `events`: the repair, and what a
backfill over a date range runs (Materialize... > a range of days > Launch backfill): one run
for the whole range (single-run backfill policy), one scan of each day (on BigQuery, billed:
max(10 MB, the day's scanned columns) per day).
"""

import warnings
from collections.abc import Callable
from datetime import date

import dagster as dg

from analytics_pipeline.defs.catalogue import owners, table_kinds, table_metadata
from analytics_pipeline.defs.ingest.keys import DAILY_ACTIVE_USERS, DAILY_EVENT_COUNTS, EVENTS
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
    def _asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        store = warehouse.get_warehouse()
        store.ensure_schema()
        rows = {}
        for day in context.partition_keys:  # one day, or every day of a backfill's range
            rows[day] = refresh(store, date.fromisoformat(day))
            context.log.info("%s %s recomputed from events: %d rows", name, day, rows[day])
        metadata: dict[str, object] = {"days": len(rows), "rows_by_day": rows}
        if len(rows) == 1:  # a range run reports the same metadata on each of its days
            metadata["dagster/row_count"] = next(iter(rows.values()))
        return dg.MaterializeResult(metadata=metadata)

    with warnings.catch_warnings():  # the backfill policy: a beta parameter, pinned
        warnings.simplefilter("ignore", dg.BetaWarning)
        decorate = dg.asset(
            name=name,
            deps=[EVENTS],
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run(),
            group_name="aggregates",
            kinds=table_kinds(settings, "sql"),
            owners=owners(settings),
            description=description,
            metadata=table_metadata(settings, name),
            retry_policy=WAREHOUSE_RETRY_POLICY,
        )
        (assets_def,) = dg.with_source_code_references([decorate(_asset)])
    return assets_def


# name -> (description, how the warehouse refreshes one day of it)
AGGREGATES: dict[str, tuple[str, Callable[[Warehouse, date], int]]] = {
    DAILY_EVENT_COUNTS.path[-1]: (
        "Events and distinct users per day, type and event name; kept current by every load. "
        "Materializing days (a backfill over a range) recomputes them from `events`: the "
        "repair after a manual fix of `events`.",
        lambda store, day: store.refresh_daily_event_counts(day),
    ),
    DAILY_ACTIVE_USERS.path[-1]: (
        "Distinct active users per day (identified and anonymous); kept current by every load. "
        "Materializing days recomputes them from `events`.",
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
