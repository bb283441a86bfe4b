"""Daily aggregates over `events`, refreshed by an automation condition with a cooldown.

Every micro-batch updates a day of `events`; recomputing the aggregates after each one would
cost a run (and, on BigQuery, a scan) every few seconds. Instead a day whose events changed is
refreshed at most once per `ANALYTICS_AGGREGATE_CRON` tick.
"""

from collections.abc import Callable
from datetime import date

import dagster as dg

from analytics_pipeline.defs.ingest.assets import EVENTS
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import WarehouseResource
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import Warehouse


def refresh_condition(cron: str) -> dg.AutomationCondition:
    """Events of the day updated since the last refresh, and a cron tick passed: refresh."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & dg.AutomationCondition.cron_tick_passed(cron)
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"events updated, at most once per '{cron}'")


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
        automation_condition=refresh_condition(settings.aggregate_cron),
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


def aggregates_definitions(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.Definitions:
    daily_event_counts = _aggregate_asset(
        "daily_event_counts",
        "Events and distinct users per day, type and event name.",
        lambda store, day: store.refresh_daily_event_counts(day),
        settings,
        partitions_def,
    )
    daily_active_users = _aggregate_asset(
        "daily_active_users",
        "Distinct active users per day (identified and anonymous).",
        lambda store, day: store.refresh_daily_active_users(day),
        settings,
        partitions_def,
    )
    automation = dg.AutomationConditionSensorDefinition(
        "aggregates_automation",
        target=dg.AssetSelection.assets(daily_event_counts, daily_active_users),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Refreshes aggregates of days whose events changed, on a cooldown.",
    )
    return dg.Definitions(assets=[daily_event_counts, daily_active_users], sensors=[automation])
