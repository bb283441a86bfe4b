"""Checks of `events` that scan the warehouse, so they run on their own cron, not per batch.

The loader's transaction already keeps messageIds unique; this check is the safety net that
would notice if it did not. Scanning a day of message ids after every micro-batch would cost a
query every few seconds (on BigQuery about 1.45 GB a scan at 33 M events a day: ~$140/day at
a load every 5 s).
On its default cron (`ANALYTICS_DUPLICATE_CHECK_CRON`, daily at 04:00 UTC, per day whose events
changed, usually today and yesterday) it bills max(10 MB, rows x 44 B) per day scanned: at 33 M
events a day ~2.9 GB a night, ~$0.50 a month at $6.25/TiB; at 1 M events a day 88 MB a night,
~$0.015 a month; below ~230k events a day the 10 MB minimum per day. The other checks cost no
query: `counts_reconcile` and `quarantine_rate` are the loads' own counts, `events_fresh` and
`dead_letter_queue_empty` read SQS attributes (`health.py`).

Partitioned asset checks are a preview feature in Dagster 1.13; the exact pin keeps them stable.
"""

import warnings
from datetime import date

import dagster as dg

from analytics_pipeline.defs.automation import refresh_condition
from analytics_pipeline.defs.ingest.keys import EVENTS, NO_DUPLICATES_CHECK
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import WarehouseResource
from analytics_pipeline.settings import Settings


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
            description="No messageId occurs twice in the day's events (the loader's store "
            "prevents it; this scan is the safety net). Failing means the store lost keys "
            "(restored from an old snapshot, or a second loader on the same queue): stop the "
            "loop, run `analytics-pipeline loader rebuild`, and remove the listed copies.",
            partitions_def=partitions_def,
            automation_condition=refresh_condition(settings.duplicate_check_cron),
            retry_policy=WAREHOUSE_RETRY_POLICY,
        )(_check)
