"""Checks of `events` that scan the warehouse, so they run on their own cron, not per batch.

The loader's transaction already keeps messageIds unique; this check is the safety net that
would notice if it did not. Scanning a day of message ids after every micro-batch would cost a
query every few seconds (on BigQuery about 1.3 GB a scan at 33 M events a day, ~$135/day);
hourly per updated day (`ANALYTICS_DUPLICATE_CHECK_CRON`) costs ~$0.20/day.

Partitioned asset checks are a preview feature in Dagster 1.13; the exact pin keeps them stable.
"""

import warnings
from datetime import date

import dagster as dg

from analytics_pipeline.defs.automation import refresh_condition
from analytics_pipeline.defs.ingest.assets import EVENTS
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import WarehouseResource
from analytics_pipeline.settings import Settings

NO_DUPLICATES_CHECK = "no_duplicate_message_ids"


def no_duplicate_message_ids_check(
    settings: Settings, partitions_def: dg.PartitionsDefinition
) -> dg.AssetChecksDefinition:
    def _check(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        duplicates = warehouse.get_warehouse().duplicate_message_ids(
            date.fromisoformat(context.partition_key)
        )
        return dg.AssetCheckResult(
            passed=not duplicates,
            metadata={"duplicate_message_ids": ", ".join(duplicates) or "none"},
        )

    with warnings.catch_warnings():  # partitioned checks: a preview feature, pinned
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.asset_check(
            asset=EVENTS,
            name=NO_DUPLICATES_CHECK,
            description="No messageId occurs twice in the day's events.",
            partitions_def=partitions_def,
            automation_condition=refresh_condition(settings.duplicate_check_cron),
            retry_policy=WAREHOUSE_RETRY_POLICY,
        )(_check)
