"""The sensor that turns waiting SQS batches into one load run per day partition.

It receives without deleting (the run deletes after its commit, so a failed run's messages come
back), stages bodies by reference, and keys each run by the messages *and their receive count*:
a run key is used once ever, so a redelivered message must produce a new key.
"""

import hashlib
from collections import defaultdict
from typing import Any

import dagster as dg

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.ingest.assets import ASSET_BY_KIND
from analytics_pipeline.defs.resources import BatchQueueResource
from analytics_pipeline.loader import BatchRef
from analytics_pipeline.loader.failures import record_failure
from analytics_pipeline.settings import Settings

SENSOR_TIME_BUDGET_SECONDS = 20.0  # an evaluation must end within 60 s


def run_key_for(refs: list[BatchRef]) -> str:
    identity = sorted(f"{ref.sqs_message_id}:{ref.receive_count}" for ref in refs)
    return hashlib.sha256("\n".join(identity).encode()).hexdigest()[:40]


def run_requests_for(
    refs: list[BatchRef], partitions_def: dg.PartitionsDefinition
) -> tuple[list[dg.RunRequest], list[BatchRef]]:
    """One run per day; returns the requests and the refs whose day is not a partition."""
    by_day: dict[str, list[BatchRef]] = defaultdict(list)
    outside: list[BatchRef] = []
    partition_keys = set(partitions_def.get_partition_keys())
    for ref in refs:
        (by_day[ref.day] if ref.day in partition_keys else outside).append(ref)
    requests = []
    for day, day_refs in sorted(by_day.items()):
        kinds = sorted({BatchKind(ref.kind) for ref in day_refs})
        requests.append(
            dg.RunRequest(
                run_key=run_key_for(day_refs),
                partition_key=day,
                asset_selection=[ASSET_BY_KIND[kind] for kind in kinds],
                run_config={
                    "ops": {
                        "load_batches": {
                            "config": {"messages": [ref.as_config() for ref in day_refs]}
                        }
                    }
                },
                tags={
                    "analytics/batches": str(len(day_refs)),
                    "analytics/rows": str(sum(ref.row_count for ref in day_refs)),
                },
            )
        )
    return requests, outside


def sqs_batches_sensor(
    settings: Settings, job: dg.JobDefinition | Any, partitions_def: dg.PartitionsDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name="sqs_batches_sensor",
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Receives batches from SQS (without deleting) and requests one load run per "
        "day partition.",
    )
    def _sensor(context: dg.SensorEvaluationContext, batch_queue: BatchQueueResource):
        queue = batch_queue.get_queue()
        received = queue.receive(
            max_messages=settings.sensor_max_messages,
            visibility_timeout=settings.sqs_visibility_seconds,
            time_budget_seconds=SENSOR_TIME_BUDGET_SECONDS,
        )
        if not received:
            return dg.SkipReason("no batches waiting")
        refs: list[BatchRef] = []
        for message in received:
            if message.header is None:
                record_failure(
                    queue.s3, queue.bucket, message, "stage", message.error or "not a batch message"
                )
                context.log.warning(
                    "message %s is not a batch (%s); it will reach the dead-letter queue after "
                    "%d receives",
                    message.message_id,
                    message.error,
                    settings.queue_max_receives,
                )
                continue
            try:
                refs.append(queue.stage(message))
            except Exception as error:  # one bad body must not fail the tick for every batch
                header = message.batch_header()
                record_failure(queue.s3, queue.bucket, message, "stage", error)
                context.log.warning(
                    "batch %s could not be staged (%s); it will reach the dead-letter queue",
                    header.batch_id,
                    error,
                )
        requests, outside = run_requests_for(refs, partitions_def)
        for ref in outside:
            context.log.warning(
                "batch %s is for day %s, outside the partitions (start %s); it will reach the "
                "dead-letter queue",
                ref.batch_id,
                ref.day,
                settings.partition_start,
            )
        if not requests:
            return dg.SkipReason(f"{len(received)} messages received, none loadable")
        return dg.SensorResult(run_requests=requests)

    return _sensor
