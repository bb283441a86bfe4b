"""Health you can see: a light sensor of its own reads the queue, the dead-letter queue and the
trigger's iterator age every ANALYTICS_HEALTH_INTERVAL_SECONDS and records them as observations
of `sqs_batch_queue` and `kinesis_stream` (their pages plot them), together with two checks an
operator can act on: `events_fresh` and `dead_letter_queue_empty`. It never receives a message
and stays out of the load loop's way; a stuck pipeline (batches waiting, no load) now looks
different from an idle one (nothing waiting).

Cost per month at the default 30 s: two GetQueueAttributes calls a tick, 172,800 requests,
$0.07 at $0.40 per million (inside SQS's free million); no warehouse query. With
ANALYTICS_HEALTH_CLOUDWATCH (AWS), one GetMetricData of 3 metrics at most once a minute:
129,600 metrics, $1.30 at $0.01 per 1,000. The row-count sensor reads table metadata
(BigQuery: free for tables; the two aggregate views are counted by a query, >= 10 MB each, so
2 x 10 MB x 4,320 ticks = 86 GB, ~$0.50 a month at the default 10 minutes; DuckDB: count(*)).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from analytics_pipeline.defs.ingest.keys import (
    DAILY_ACTIVE_USERS,
    DAILY_EVENT_COUNTS,
    DEAD_LETTERS_CHECK,
    EVENTS,
    EVENTS_QUARANTINE,
    FRESHNESS_CHECK,
    KINESIS_STREAM,
    SQS_BATCH_QUEUE,
)
from analytics_pipeline.defs.resources import BatchQueueResource, WarehouseResource
from analytics_pipeline.ingest.iterator_age import TriggerLag, read_trigger_lag
from analytics_pipeline.loader.health import (
    CloudWatchAges,
    QueueDepths,
    cloudwatch_ages,
    queue_depths,
)
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.tables import (
    DAILY_ACTIVE_USERS_TABLE,
    DAILY_EVENT_COUNTS_TABLE,
    EVENTS_TABLE,
    QUARANTINE_TABLE,
)

HEALTH_SENSOR_NAME = "queue_health_sensor"
ROW_COUNT_SENSOR_NAME = "table_row_counts_sensor"
CLOUDWATCH_EVERY_SECONDS = 60.0  # CloudWatch has one datapoint a minute: reading more buys nothing
ROW_COUNT_LOCK_WAIT_SECONDS = 20.0  # a sensor evaluation must end within 60 s
TABLE_ASSETS = {
    EVENTS: EVENTS_TABLE,
    EVENTS_QUARANTINE: QUARANTINE_TABLE,
    DAILY_EVENT_COUNTS: DAILY_EVENT_COUNTS_TABLE,
    DAILY_ACTIVE_USERS: DAILY_ACTIVE_USERS_TABLE,
}

FRESHNESS_DESCRIPTION = (
    "Fails when batches wait in the queue (visible or in flight) and no load has committed for "
    "ANALYTICS_FRESHNESS_MINUTES: the load loop is stuck or not running (an idle queue passes). "
    "Open Runs: one `events_loop_job` run should be STARTED; its logs say what it waits for "
    "(e.g. the warehouse lock). A STARTED run that logs nothing can be terminated: "
    "`sqs_batches_sensor` starts the next within a tick. No STARTED run: check that the sensor "
    "is RUNNING and its ticks succeed."
)
DEAD_LETTERS_DESCRIPTION = (
    "Fails while the dead-letter queue holds batches: each failed to load "
    "ANALYTICS_QUEUE_MAX_RECEIVES times and waits there (nothing is lost; SQS keeps it up to 14 "
    "days). `analytics-pipeline dlq list` shows each batch and its last error. Fix the cause "
    "(the warehouse refused rows, an oversize body is missing from S3...), then launch "
    "`dlq_replay_job` (or `dlq_redrive_job` for a large queue on AWS): batches already loaded "
    "are only removed, the others load exactly once."
)


@dataclass(frozen=True)
class Health:
    """One reading; what the observations and both checks are made of."""

    depths: QueueDepths
    now: float
    last_load_at: float | None  # epoch seconds of the latest load (events or quarantine)
    trigger: TriggerLag | None = None
    cloudwatch: CloudWatchAges | None = None

    @property
    def seconds_since_last_load(self) -> float | None:
        return None if self.last_load_at is None else max(self.now - self.last_load_at, 0.0)


def latest_load_at(instance: dg.DagsterInstance) -> float | None:
    """When the last load committed: the newest materialization of either table (the load loop
    reports one per load and day it wrote), from Dagster's own event log (no warehouse query)."""
    times = [
        record.timestamp
        for key in (EVENTS, EVENTS_QUARANTINE)
        if (record := instance.get_latest_materialization_event(key)) is not None
    ]
    return max(times, default=None)


def read_health(
    settings: Settings,
    batch_queue: BatchQueueResource,
    instance: dg.DagsterInstance,
    *,
    with_cloudwatch: bool = False,
) -> Health:
    depths = queue_depths(batch_queue.get_queue(), batch_queue.get_dead_letters())
    ages = None
    if with_cloudwatch:
        ages = cloudwatch_ages(
            batch_queue.get_cloudwatch(),
            settings.queue_name,
            settings.dlq_name,
            settings.ingest_function_name,
        )
    return Health(
        depths=depths,
        now=time.time(),
        last_load_at=latest_load_at(instance),
        trigger=read_trigger_lag(settings.state_dir, settings.stream_name),
        cloudwatch=ages,
    )


def _numbers(values: dict[str, float | int | None]) -> dict[str, float | int]:
    """Numbers only (the UI plots numeric metadata), rounded; unknown values left out."""
    return {
        name: round(value, 3) if isinstance(value, float) else value
        for name, value in values.items()
        if value is not None
    }


def queue_observation(health: Health) -> dg.AssetObservation:
    depths, ages = health.depths, health.cloudwatch or CloudWatchAges()
    return dg.AssetObservation(
        SQS_BATCH_QUEUE,
        metadata=_numbers(
            {
                "visible": depths.visible,
                "in_flight": depths.in_flight,
                "waiting": depths.waiting,
                "dead_letters": depths.dead_letters,
                "seconds_since_last_load": health.seconds_since_last_load,
                "oldest_message_age_seconds": ages.oldest_message_seconds,
                "oldest_dead_letter_age_seconds": ages.oldest_dead_letter_seconds,
            }
        ),
    )


def stream_observation(health: Health) -> dg.AssetObservation | None:
    """The Lambda trigger's iterator age: CloudWatch on AWS, the local trigger's report here."""
    if health.cloudwatch is not None and health.cloudwatch.iterator_age_seconds is not None:
        return dg.AssetObservation(
            KINESIS_STREAM,
            metadata={
                "iterator_age_seconds": round(health.cloudwatch.iterator_age_seconds, 3),
                "source": "CloudWatch AWS/Lambda IteratorAge (maximum, 1 min)",
            },
        )
    if health.trigger is None:
        return None
    return dg.AssetObservation(
        KINESIS_STREAM,
        metadata={
            "iterator_age_seconds": round(health.trigger.iterator_age_seconds, 3),
            # A trigger that stopped reporting is down: its iterator age is no longer known.
            "seconds_since_trigger_report": round(
                max(health.now - health.trigger.updated_at, 0), 1
            ),
            "shards": len(health.trigger.shards),
            "source": "local trigger (analytics-pipeline trigger)",
        },
    )


def freshness_result(health: Health, settings: Settings) -> dg.AssetCheckResult:
    limit = settings.freshness_minutes * 60
    since = health.seconds_since_last_load
    waiting = health.depths.waiting
    stale = waiting > 0 and (since is None or since > limit)
    return dg.AssetCheckResult(
        asset_key=EVENTS,
        check_name=FRESHNESS_CHECK,
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{waiting} batches waiting and no load for "
            f"{'ever' if since is None else f'{since / 60:.1f} min'}"
            if stale
            else None
        ),
        metadata=_numbers(
            {
                "batches_waiting": waiting,
                "seconds_since_last_load": since,
                "limit_seconds": limit,
            }
        ),
    )


def dead_letters_result(health: Health, settings: Settings) -> dg.AssetCheckResult:
    count = health.depths.dead_letters
    return dg.AssetCheckResult(
        asset_key=SQS_BATCH_QUEUE,
        check_name=DEAD_LETTERS_CHECK,
        passed=count == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{count} batches in {settings.dlq_name}: `analytics-pipeline dlq list`, then "
            "`dlq_replay_job`"
            if count
            else None
        ),
        metadata={"dead_letters": count, "dead_letter_queue": settings.dlq_name},
    )


def as_evaluation(result: dg.AssetCheckResult) -> dg.AssetCheckEvaluation:
    """The same verdict, reported by a sensor instead of a run."""
    assert result.asset_key is not None and result.check_name is not None
    return dg.AssetCheckEvaluation(
        asset_key=result.asset_key,
        check_name=result.check_name,
        passed=result.passed,
        severity=result.severity,
        description=result.description,
        metadata=result.metadata,
    )


def health_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """The two checks, executable from the UI too ("Execute"): the same reading, on demand."""

    @dg.asset_check(asset=EVENTS, name=FRESHNESS_CHECK, description=FRESHNESS_DESCRIPTION)
    def events_fresh(
        context: dg.AssetCheckExecutionContext, batch_queue: BatchQueueResource
    ) -> dg.AssetCheckResult:
        return freshness_result(read_health(settings, batch_queue, context.instance), settings)

    @dg.asset_check(
        asset=SQS_BATCH_QUEUE, name=DEAD_LETTERS_CHECK, description=DEAD_LETTERS_DESCRIPTION
    )
    def dead_letter_queue_empty(
        context: dg.AssetCheckExecutionContext, batch_queue: BatchQueueResource
    ) -> dg.AssetCheckResult:
        return dead_letters_result(read_health(settings, batch_queue, context.instance), settings)

    return [events_fresh, dead_letter_queue_empty]


def _observing_sensor(
    name: str, interval_seconds: int, description: str
) -> Callable[..., dg.SensorDefinition]:
    """A sensor that only records observations and check evaluations (it never launches a run),
    so it is on from the start."""
    return dg.sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )


def health_sensor(settings: Settings) -> dg.SensorDefinition:
    @_observing_sensor(
        HEALTH_SENSOR_NAME,
        settings.health_interval_seconds,
        "Records the queue's, the dead-letter queue's and the trigger's health as "
        "observations and evaluates `events_fresh` and `dead_letter_queue_empty`; never "
        "receives a message.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, batch_queue: BatchQueueResource
    ) -> dg.SensorResult:
        last_cloudwatch = float(context.cursor or 0)
        with_cloudwatch = (
            settings.health_cloudwatch and time.time() - last_cloudwatch >= CLOUDWATCH_EVERY_SECONDS
        )
        health = read_health(
            settings, batch_queue, context.instance, with_cloudwatch=with_cloudwatch
        )
        events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = [queue_observation(health)]
        stream = stream_observation(health)
        if stream is not None:
            events.append(stream)
        events += [
            as_evaluation(freshness_result(health, settings)),
            as_evaluation(dead_letters_result(health, settings)),
        ]
        return dg.SensorResult(
            asset_events=events,
            cursor=str(health.now if with_cloudwatch else last_cloudwatch),
        )

    return _sensor


def row_count_sensor(settings: Settings) -> dg.SensorDefinition:
    @_observing_sensor(
        ROW_COUNT_SENSOR_NAME,
        settings.row_count_interval_seconds,
        "Records each table's row count (`dagster/row_count`) as an observation "
        "every ANALYTICS_ROW_COUNT_INTERVAL_SECONDS.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            counts = warehouse.get_warehouse(ROW_COUNT_LOCK_WAIT_SECONDS).table_row_counts()
        except Exception as error:  # not created yet, or busy: the next tick counts
            return dg.SkipReason(f"row counts not read: {type(error).__name__}: {error}")
        return dg.SensorResult(
            asset_events=[
                dg.AssetObservation(key, metadata={"dagster/row_count": counts.get(table, 0)})
                for key, table in TABLE_ASSETS.items()
            ]
        )

    return _sensor
