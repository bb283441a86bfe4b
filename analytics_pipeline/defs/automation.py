"""Declarative automation: what re-runs after `events` changes, and the sensor that evaluates it.

Every micro-batch updates a day of `events`. The aggregates follow in the same commit
(incrementally), so nothing refreshes them; what remains is the duplicate check, a safety net
that scans a day: re-scanning after each micro-batch would cost a run (and, on BigQuery, a scan)
every second, so a day whose events changed is checked at most once a cron tick.
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
        description="Re-checks days whose events changed, at most once a cron tick.",
    )
