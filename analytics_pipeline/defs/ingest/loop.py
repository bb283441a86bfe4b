"""The load loop in Dagster: one long-lived run that loads every micro-batch as it arrives, and
the sensor that keeps exactly one such run alive.

Every commit is one more materialization of the day partitions it touched (`events`,
`events_quarantine`, and the aggregates, which the load keeps current), with its metadata, and
one `counts_reconcile` check evaluation: what the UI shows per micro-batch stays what it was
with a run per micro-batch, without a process start and a sensor tick (5 s at best) in front of
every load. A load that fails part of its batches shows as a failed check and metadata; an
exception fails the op (its RetryPolicy retries it), a termination ends the run (no retry); a
dead run shows as a failed run and the sensor starts the next within a tick or two. The sensor
is the only restarter: loop runs carry `dagster/max_retries: 0`, so run retries never start a
second loop beside the sensor's.
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.defs.ingest.assets import ASSET_BY_KIND, load_metadata
from analytics_pipeline.defs.ingest.keys import (
    COUNTS_RECONCILE_CHECK,
    DAILY_ACTIVE_USERS,
    DAILY_EVENT_COUNTS,
    EVENTS,
)
from analytics_pipeline.defs.ingest.quarantine_rate import RejectionWindow
from analytics_pipeline.defs.policies import WAREHOUSE_RETRY_POLICY
from analytics_pipeline.defs.resources import BatchQueueResource, WarehouseResource
from analytics_pipeline.loader import LoadOutcome
from analytics_pipeline.loader.loop import open_loader, run_loop
from analytics_pipeline.loader.store import store_in_use
from analytics_pipeline.settings import Settings

LOOP_JOB_NAME = "events_loop_job"
# On every loop run, valued with its queue: the sensor looks for this queue's loop only (two
# pipelines may share one Dagster instance, each with its own queue and store).
LOOP_TAG = "analytics/loop_queue"
# Logged by the loop run that reports a load another loop committed and never reported.
RECOVERED_MESSAGE = "reporting loads a stopped loop committed and never reported"
# A restarted loop may find the store still held by the run it replaces (ending, or not yet
# marked dead): it waits this long for it.
STORE_WAIT_SECONDS = 120.0
# A loop run takes the store within seconds of its start; one this old without it is dead.
DEAD_AFTER_SECONDS = 60.0


class LoopConfig(dg.Config):
    seconds: int = Field(
        default=0, description="How long this run loads; 0: ANALYTICS_LOOP_SECONDS."
    )


def materializations(
    outcome: LoadOutcome, partition_keys: set[str]
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The events of one load: a materialization per asset and day it changed, with what the
    load did to that day (days that are not partitions are loaded all the same, only not
    reported), and a `counts_reconcile` evaluation per day."""
    for kind in (BatchKind.EVENTS, BatchKind.QUARANTINE):
        for day in sorted(outcome.days.get(kind, set()) & partition_keys):
            result = outcome.day_result(kind, day)
            metadata: dict[str, Any] = load_metadata(
                result,
                outcome.day_result(BatchKind.QUARANTINE, day).rows_received,
                bytes_loaded=None if outcome.recovered else outcome.bytes_by_day[(kind, day)],
                load_seconds=None if outcome.recovered else outcome.seconds,
            )
            if outcome.recovered:  # its loader stopped between the commit and this report
                metadata["recovered_load_ids"] = ", ".join(outcome.load_ids)
            yield dg.AssetMaterialization(ASSET_BY_KIND[kind], partition=day, metadata=metadata)
            if kind is BatchKind.EVENTS:
                yield dg.AssetCheckEvaluation(
                    asset_key=EVENTS,
                    check_name=COUNTS_RECONCILE_CHECK,
                    passed=result.reconciles and not result.failed_batch_ids,
                    partition=day,
                    metadata={
                        "rows_declared": result.rows_declared,
                        "rows_received": result.rows_received,
                        "rows_inserted": result.rows_inserted,
                        "duplicates_skipped": result.duplicates_skipped,
                        "batches_failed": len(result.failed_batch_ids),
                    },
                )
    for day in sorted(outcome.aggregate_days & partition_keys):
        for key in (DAILY_EVENT_COUNTS, DAILY_ACTIVE_USERS):
            yield dg.AssetMaterialization(key, partition=day, metadata={"incremental": True})


def loop_job(settings: Settings, partitions_def: dg.PartitionsDefinition) -> dg.JobDefinition:
    @dg.op(
        name="events_loop",
        out={},  # it reports through events; an output would fail the run when the loop ends
        retry_policy=WAREHOUSE_RETRY_POLICY,
        description="Loads every SQS batch as it arrives until the run's time is up.",
    )
    def events_loop(
        context: dg.OpExecutionContext,
        config: LoopConfig,
        batch_queue: BatchQueueResource,
        warehouse: WarehouseResource,
    ) -> Iterator[Any]:
        seconds = config.seconds or settings.loop_seconds
        partition_keys = set(partitions_def.get_partition_keys())
        rejections = RejectionWindow.from_settings(settings)
        # From the run's start, so that an op retry does not outlive the run's max runtime.
        record = context.instance.get_run_record_by_id(context.run_id)
        started = (record.start_time if record else None) or time.time()
        if record and record.dagster_run.status is dg.DagsterRunStatus.CANCELING:
            # An interrupt that landed in Dagster's own frames came back as an op retry.
            raise dg.Failure("the loop run was terminated", allow_retries=False)
        try:
            with open_loader(
                settings,
                warehouse=warehouse.get_warehouse(),
                queue=batch_queue.get_queue(),
                wait_seconds=STORE_WAIT_SECONDS,
            ) as loader:
                context.log.info("loading %s for %d s", settings.queue_name, seconds)
                remaining = seconds - (time.time() - started)
                for outcome in run_loop(loader, settings, seconds=max(remaining, 0)):
                    if outcome.recovered:
                        context.log.info(
                            f"{RECOVERED_MESSAGE}: {', '.join(outcome.load_ids)} (days "
                            f"{', '.join(sorted(set().union(*outcome.days.values())))})"
                        )
                    yield from materializations(outcome, partition_keys)
                    rejections.add(outcome)
                    evaluation = rejections.evaluation_due()
                    if evaluation is not None:
                        yield evaluation
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt) as interrupted:
            # Dagster's RetryPolicy retries an interrupted op: a terminated loop run (Terminate
            # in the UI, run monitoring's max runtime) would go on loading. The store is closed
            # by now; the next loop run recovers a load left in flight.
            raise dg.Failure("the loop run was terminated", allow_retries=False) from interrupted

    @dg.job(
        name=LOOP_JOB_NAME,
        executor_def=dg.in_process_executor,  # the loop is one process: no process per step
        description="The long-lived load loop; the sensor keeps one running.",
        tags={LOOP_TAG: settings.queue_name},
    )
    def _job() -> None:
        events_loop()

    return _job


ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _died(record: dg.RunRecord, instance: dg.DagsterInstance, settings: Settings) -> bool:
    """A loop run that started over DEAD_AFTER_SECONDS ago, holds no store and has written no
    event for as long is dead (killed with its `dagster dev`, or OOM): the default run launcher
    cannot tell, so run monitoring would only fail it at its max runtime, half an hour with no
    loads. A live run lets the store go for seconds: between an op failure and its retry (the
    RetryPolicy's backoff, at most ~16 s, right after its STEP_UP_FOR_RETRY event) and as it
    ends."""
    started = record.start_time or record.create_timestamp.timestamp()
    now = time.time()
    if now - started < DEAD_AFTER_SECONDS or store_in_use(settings.loader_store_dir) is not False:
        return False  # young, or its store is held (or lives on another host)
    latest = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False)
    last_event_at = latest.records[0].timestamp if latest.records else started
    return is_dead(started, last_event_at, store_held=False, now=now)


def is_dead(started_at: float, last_event_at: float, *, store_held: bool, now: float) -> bool:
    """The rule `_died` applies, on its facts (epoch seconds)."""
    quiet_since = max(started_at, last_event_at)
    return not store_held and now - quiet_since >= DEAD_AFTER_SECONDS


def loop_sensor(settings: Settings, job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="sqs_batches_sensor",
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Keeps one load loop run alive (it never receives or deletes anything).",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        active = context.instance.get_run_records(
            dg.RunsFilter(
                job_name=LOOP_JOB_NAME,
                statuses=ACTIVE_STATUSES,
                tags={LOOP_TAG: settings.queue_name},
            ),
            limit=1,
        )
        if active and not _died(active[0], context.instance, settings):
            return dg.SkipReason(f"loop run {active[0].dagster_run.run_id} is running")
        if active:
            context.instance.report_run_failed(
                active[0].dagster_run,
                "the loop run's process is gone (the loader store is not held): marked failed "
                "so that the sensor can start the next",
            )
        # A run key is used once ever: the tick's id makes each restart a new one.
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"loop-{context.cursor or 0}-{time.time_ns()}",
                    tags={
                        "dagster/max_runtime": str(settings.loop_seconds + 600),
                        "dagster/max_retries": "0",
                    },
                )
            ],
            cursor=str(int(context.cursor or 0) + 1),
        )

    return _sensor
