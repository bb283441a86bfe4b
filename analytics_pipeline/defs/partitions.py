"""Day partitions shared by every event table (UTC days)."""

from __future__ import annotations

import dagster as dg

from analytics_pipeline.settings import Settings


def day_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Today's partition exists (micro-batches land in it as they arrive), and so does tomorrow's.

    `end_offset=2` rather than 1: an event stamped within the future tolerance just after midnight
    UTC belongs to tomorrow, and a batch whose partition does not exist yet could only wait in the
    queue until it reaches the dead-letter queue.
    """
    return dg.DailyPartitionsDefinition(start_date=settings.partition_start, end_offset=2)
