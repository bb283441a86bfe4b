"""Operations from the UI: the dead-letter replay and redrive and the quarantine replay, as jobs
whose config has a default for every field and a choice (an enum) where there is one, so the
launchpad needs no typing: open it, pick, launch. Each op calls the same function the CLI calls
(`loader/replay.py`), with the queues and the warehouse from the resources.

Who may run them: they send to the main queue, which the loader's identity may not
(`deploy/iam/dagster-loader-policy.json`); in production these runs take the operator's
identity (`deploy/iam/operator-replay-policy.json`), e.g. a run launcher task role override
for runs tagged `analytics/operation`.
"""

import enum
from typing import Any

import dagster as dg
from pydantic import Field

from analytics_pipeline.aws import is_local_endpoint
from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.defs.resources import BatchQueueResource, WarehouseResource
from analytics_pipeline.loader.replay import (
    DlqReplayReport,
    redrive_dead_letters,
    replay_dead_letters,
    replay_quarantine_into,
)
from analytics_pipeline.settings import Settings

OPERATION_TAG = "analytics/operation"
DLQ_REPLAY_JOB = "dlq_replay_job"
DLQ_REDRIVE_JOB = "dlq_redrive_job"
QUARANTINE_REPLAY_JOB = "quarantine_replay_job"

# The launchpad offers an enum's member names: these are the reason codes themselves.
QuarantineReason = enum.Enum(  # type: ignore[misc]
    "QuarantineReason", [(reason.value, reason.value) for reason in Reason]
)


class DeadLetterKind(enum.Enum):
    all = "all"
    events = "events"
    quarantine = "quarantine"


class DlqReplayConfig(dg.Config):
    kind: DeadLetterKind = Field(
        default=DeadLetterKind.all,
        description="Which dead letters go back: all, or only event or quarantine batches.",
    )
    batch_ids: list[str] = Field(
        default=[],
        description="Only these batch ids (`analytics-pipeline dlq list` shows them); "
        "empty: every dead letter of the kind.",
    )


class DlqRedriveConfig(dg.Config):
    max_messages_per_second: int = Field(
        default=0,
        description="On AWS: how many messages SQS's move task moves a second (1-500); 0: its "
        "own pace. Ignored locally, where the move is a replay.",
    )


class QuarantineReplayConfig(dg.Config):
    reason: QuarantineReason = Field(  # type: ignore[valid-type]
        default=QuarantineReason.timestamp_too_old,  # type: ignore[attr-defined]
        description="Reason code whose rows are parsed again under the current contract and "
        "settings (after a fix, e.g. a wider ANALYTICS_LATE_ARRIVAL_DAYS).",
    )
    limit: int = Field(default=0, description="At most this many rows, oldest first; 0: all.")


def _replay_metadata(report: DlqReplayReport) -> dict[str, Any]:
    return {
        "sent_back": len(report.sent),
        "already_loaded_removed": len(report.already_loaded),
        "left_in_dead_letter_queue": report.left,
        "batches": dg.MetadataValue.md(
            "\n".join(f"- sent `{name}`" for name in report.sent)
            + "".join(f"\n- removed (loaded) `{name}`" for name in report.already_loaded)
            or "nothing to replay"
        ),
    }


def operation_jobs(settings: Settings) -> list[dg.JobDefinition]:
    @dg.op(
        name="dlq_replay",
        description="Sends dead-lettered batches back to the main queue (those already in the "
        "warehouse's ledger are only removed); the load loop then loads them exactly once.",
    )
    def dlq_replay(
        context: dg.OpExecutionContext,
        config: DlqReplayConfig,
        batch_queue: BatchQueueResource,
        warehouse: WarehouseResource,
    ) -> dg.Output[None]:
        kinds = () if config.kind is DeadLetterKind.all else (BatchKind(config.kind.value),)
        report = replay_dead_letters(
            batch_queue.get_dead_letters(),
            batch_queue.get_queue(),
            config.batch_ids,
            loaded_batch_ids=warehouse.get_warehouse().loaded_batch_ids,
            kinds=kinds,
        )
        context.log.info(
            "sent back %d, removed %d already loaded, %d left",
            len(report.sent),
            len(report.already_loaded),
            report.left,
        )
        return dg.Output(None, metadata=_replay_metadata(report))

    @dg.op(
        name="dlq_redrive",
        description="Moves the whole dead-letter queue back: SQS's own move task on AWS, a "
        "replay against the local emulator (which lacks it).",
    )
    def dlq_redrive(
        context: dg.OpExecutionContext,
        config: DlqRedriveConfig,
        batch_queue: BatchQueueResource,
        warehouse: WarehouseResource,
    ) -> dg.Output[None]:
        report = redrive_dead_letters(
            batch_queue.get_dead_letters(),
            batch_queue.get_queue(),
            use_move_task=not is_local_endpoint(settings.aws_endpoint_url),
            max_per_second=config.max_messages_per_second or None,
            loaded_batch_ids=warehouse.get_warehouse().loaded_batch_ids,
        )
        if report.status == "FAILED":
            raise dg.Failure(f"SQS's move task failed: {report.failure_reason}")
        context.log.info("redrive by %s: %d moved", report.how, report.moved)
        metadata: dict[str, Any] = {"how": report.how, "moved": report.moved}
        if report.status:
            metadata |= {"status": report.status, "to_move": report.to_move}
        return dg.Output(None, metadata=metadata)

    @dg.op(
        name="quarantine_replay",
        description="Parses the quarantined rows of one reason again; newly accepted events go "
        "through the queue and load exactly once, and their rows are marked replayed.",
    )
    def quarantine_replay(
        context: dg.OpExecutionContext,
        config: QuarantineReplayConfig,
        batch_queue: BatchQueueResource,
        warehouse: WarehouseResource,
    ) -> dg.Output[None]:
        report = replay_quarantine_into(
            batch_queue.get_queue(),
            warehouse.get_warehouse(),
            settings,
            config.reason.value,
            config.limit or None,
        )
        context.log.info(
            "%d rows, %d replayed (%d events sent)",
            report.rows,
            report.replayed,
            report.events_sent,
        )
        return dg.Output(
            None,
            metadata={
                "rows": report.rows,
                "replayed": report.replayed,
                "events_sent": report.events_sent,
                "rejections_sent": report.rejections_sent,
                "batches_sent": report.batches,
                "still_rejected": sum(report.still_rejected.values()),
                "still_rejected_by_reason": dict(report.still_rejected) or "none",
                "not_replayable": report.not_replayable,
            },
        )

    def job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
        @dg.job(
            name=name,
            description=description,
            executor_def=dg.in_process_executor,
            tags={OPERATION_TAG: op.name},
        )
        def _job() -> None:
            op()

        return _job

    return [
        job(
            DLQ_REPLAY_JOB,
            dlq_replay,
            "Dead-lettered batches back to the queue, all or some (after fixing the cause).",
        ),
        job(
            DLQ_REDRIVE_JOB,
            dlq_redrive,
            "The whole dead-letter queue back to the queue, server side on AWS (large queues).",
        ),
        job(
            QUARANTINE_REPLAY_JOB,
            quarantine_replay,
            "Quarantined rows of one reason parsed again under the current contract.",
        ),
    ]
