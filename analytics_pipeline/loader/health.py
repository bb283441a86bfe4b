"""How the path in front of the loader is doing, read without touching a message: the depths of
the queue and its dead-letter queue (SQS attributes), the age of their oldest messages and the
ingest Lambda's iterator age (CloudWatch, on AWS; the local trigger's is in
`ingest/iterator_age.py`).

Why the oldest message's age is not measured locally: SQS has no non-destructive peek. A receive,
even with a visibility timeout of 0, counts as a receive (`ApproximateReceiveCount`), so a probe
every 30 s would push a waiting batch towards the dead-letter queue, and a receive returns up to
10 messages sampled from some servers, not the oldest. SQS publishes the age only as the
CloudWatch metric `ApproximateAgeOfOldestMessage` (the moto emulator publishes none), so locally
the health sensor reports the time since the last load instead, which is what the freshness
check needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics_pipeline.loader.batch_queue import BatchQueue

CLOUDWATCH_PERIOD_SECONDS = 60  # SQS and Lambda publish these metrics once a minute


@dataclass(frozen=True)
class QueueDepths:
    """What SQS says about the queue and its dead-letter queue (approximate, as SQS counts)."""

    visible: int
    in_flight: int
    dead_letters: int  # visible + in flight in the dead-letter queue

    @property
    def waiting(self) -> int:
        """Batches not loaded yet: waiting, or received by a load that has not deleted them."""
        return self.visible + self.in_flight


def queue_depths(queue: BatchQueue, dead_letters: BatchQueue) -> QueueDepths:
    """Two GetQueueAttributes calls, nothing received."""
    main, dead = queue.depth(), dead_letters.depth()
    return QueueDepths(main["visible"], main["in_flight"], dead["visible"] + dead["in_flight"])


@dataclass(frozen=True)
class CloudWatchAges:
    """The latest one-minute maxima CloudWatch has (None where it has no datapoint yet)."""

    oldest_message_seconds: float | None = None
    oldest_dead_letter_seconds: float | None = None
    iterator_age_seconds: float | None = None  # the ingest Lambda's event source mapping


def cloudwatch_ages(
    cloudwatch: Any, queue_name: str, dlq_name: str, function_name: str
) -> CloudWatchAges:
    """One GetMetricData call for three metrics ($0.01 per 1,000 metrics requested)."""
    queries = {
        "oldest_message_seconds": (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "QueueName",
            queue_name,
        ),
        "oldest_dead_letter_seconds": (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "QueueName",
            dlq_name,
        ),
        "iterator_age_seconds": ("AWS/Lambda", "IteratorAge", "FunctionName", function_name),
    }
    end = datetime.now(UTC) + timedelta(minutes=1)  # the current minute's datapoint included
    response = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": name.replace("_", ""),
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": dimension, "Value": value}],
                    },
                    "Period": CLOUDWATCH_PERIOD_SECONDS,
                    "Stat": "Maximum",
                },
            }
            for name, (namespace, metric, dimension, value) in queries.items()
        ],
        StartTime=end - timedelta(minutes=6),
        EndTime=end,
        ScanBy="TimestampDescending",
    )
    latest: dict[str, float | None] = dict.fromkeys(queries)
    for result in response.get("MetricDataResults", []):
        name = next(n for n in queries if n.replace("_", "") == result["Id"])
        if result.get("Values"):
            latest[name] = float(result["Values"][0])  # newest first
    if latest["iterator_age_seconds"] is not None:  # Lambda reports milliseconds
        latest["iterator_age_seconds"] /= 1000.0
    return CloudWatchAges(**latest)
