"""Declarative automation: what refreshes after `events` changes, and the sensor that evaluates it.

Every micro-batch updates a day of `events`; recomputing aggregates or re-scanning the day after
each one would cost a run (and, on BigQuery, a scan) every few seconds. Instead a day whose
events changed is refreshed at most once per `ANALYTICS_AGGREGATE_CRON` tick.
"""

import dagster as dg

AUTOMATION_SENSOR_NAME = "cooldown_automation"


def refresh_condition(cron: str) -> dg.AutomationCondition:
    """Events of the day updated since the last refresh, and a cron tick passed: refresh."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & dg.AutomationCondition.cron_tick_passed(cron)
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"events updated, at most once per '{cron}'")


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR_NAME,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Refreshes aggregates and re-checks days whose events changed, on a cooldown.",
    )
