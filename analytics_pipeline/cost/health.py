"""What the health sensor (defs/ingest/health.py) costs: GetQueueAttributes on the queue and its
dead-letter queue every tick, and CloudWatch GetMetricData (3 metrics) when enabled."""

from __future__ import annotations

from analytics_pipeline.cost.prices import PRICES, SECONDS_PER_MONTH

CLOUDWATCH_METRICS_PER_CALL = 3  # the queue's and the DLQ's oldest-message age, IteratorAge


def health_items(
    interval_seconds: int, cloudwatch_every_seconds: int, queues: int, sqs_usd: float
) -> tuple[list[tuple[str, float, str]], float]:
    """(item, $ a month, arithmetic) of each reading, and the SQS requests (for the free tier)."""
    ticks = SECONDS_PER_MONTH / interval_seconds
    requests = ticks * 2 * queues
    items = [
        (
            "SQS GetQueueAttributes (health sensor)",
            requests * sqs_usd / 1e6,
            f"{ticks:,.0f} ticks ({interval_seconds} s) x 2 queues (main, DLQ) x {queues} "
            f"pipeline(s) = {requests:,.0f} x ${sqs_usd}/M",
        )
    ]
    if cloudwatch_every_seconds:
        price = PRICES["cloudwatch_metrics_requested"]
        calls = SECONDS_PER_MONTH / cloudwatch_every_seconds * queues
        metrics = calls * CLOUDWATCH_METRICS_PER_CALL
        items.append(
            (
                "CloudWatch GetMetricData (health sensor)",
                metrics * price.usd / 1000,
                f"{calls:,.0f} calls (every {cloudwatch_every_seconds} s) x "
                f"{CLOUDWATCH_METRICS_PER_CALL} metrics (queue and DLQ oldest-message age, the "
                f"Lambda's IteratorAge) = {metrics:,.0f} x ${price.usd}/1,000",
            )
        )
    return items, requests
