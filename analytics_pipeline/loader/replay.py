"""Second chances: dead-lettered batches back to the queue, quarantined events through the contract.

`dlq list` / `dlq replay`: SQS's StartMessageMoveTask is not in every emulator, so a replay
receives from the dead-letter queue, sends the same body and attributes to the main queue, then
deletes from the dead-letter queue. A crash between the send and the delete sends the batch again
on the next replay; the loader's ledger (batch ids are derived from content) loads it once.

`quarantine replay --reason CODE`: after a contract fix (a raised limit, a wider window), the
quarantined payloads with that reason are parsed again by the current contract with their
original arrival time. Newly accepted events (and any rejections from a replayed blob) are packed
by the Lambda's own code into batches with content-derived ids and sent to the main queue, so the
normal loader loads them exactly once; then the rows get `replayed_at`, so a second replay finds
nothing. Limits of what can be replayed: a blob-level payload cut at 64 KiB is not the whole blob
(reported as not replayable), and an event-level payload is the event alone: the blob's `sentAt`
and `context` are gone, so a replayed event keeps its own timestamps without skew correction.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics_pipeline.aws import is_local_endpoint
from analytics_pipeline.contract import is_blob_rejection, parse_blob
from analytics_pipeline.contract.batches import BatchHeader, BatchKind
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.rows import QuarantineRow
from analytics_pipeline.ingest.handler import Sink, deliver
from analytics_pipeline.ingest.packing import ParsedRecord, pack_records
from analytics_pipeline.loader.batch_queue import BatchQueue, ReceivedMessage
from analytics_pipeline.loader.failures import LoadFailure, read_failure
from analytics_pipeline.settings import Settings
from analytics_pipeline.warehouse.base import Warehouse

LIST_VISIBILITY_SECONDS = 30
# A dead-letter queue is small (it holds what failed); one listing or replay reads it whole.
MAX_DEAD_LETTERS = 10_000


@dataclass(frozen=True)
class DeadLetter:
    sqs_message_id: str
    receive_count: int  # as the dead-letter queue counts it (this listing included)
    header: BatchHeader | None
    failure: LoadFailure | None  # the last recorded load failure, if any

    @property
    def batch_id(self) -> str | None:
        return self.header.batch_id if self.header else None

    def as_row(self) -> dict[str, Any]:
        header, failure = self.header, self.failure
        return {
            "batch_id": header.batch_id if header else None,
            "kind": header.kind.value if header else None,
            "day": header.day if header else None,
            "rows": header.row_count if header else None,
            "receives": failure.receive_count if failure else self.receive_count,
            "failed_at": failure.failed_at if failure else None,
            "why": (f"{failure.stage}: {failure.error}" if failure else "no failure recorded"),
            "sqs_message_id": self.sqs_message_id,
        }


def _receive_all(queue: BatchQueue, visibility: int) -> list[ReceivedMessage]:
    """Every message of a (small) queue, each once, hidden for `visibility` seconds."""
    return queue.receive(
        max_messages=MAX_DEAD_LETTERS, visibility_timeout=visibility, time_budget_seconds=60.0
    )


def list_dead_letters(dead_letters: BatchQueue) -> list[DeadLetter]:
    """What waits in the dead-letter queue and why; the messages stay there."""
    messages = _receive_all(dead_letters, LIST_VISIBILITY_SECONDS)
    try:
        letters = [
            DeadLetter(
                sqs_message_id=message.message_id,
                receive_count=message.receive_count,
                header=message.header,
                failure=read_failure(
                    dead_letters.s3,
                    dead_letters.bucket,
                    message.header.batch_id if message.header else None,
                    message.message_id,
                ),
            )
            for message in messages
        ]
    finally:
        dead_letters.release(messages)
    return sorted(letters, key=lambda letter: (letter.batch_id or "", letter.sqs_message_id))


@dataclass
class DlqReplayReport:
    sent: list[str] = field(default_factory=list)  # batch ids (or SQS ids) sent to the queue
    already_loaded: list[str] = field(default_factory=list)  # in the ledger: only deleted
    left: int = 0  # not selected (other batch ids), left in the dead-letter queue


def replay_dead_letters(
    dead_letters: BatchQueue,
    queue: BatchQueue,
    batch_ids: Collection[str] = (),
    loaded_batch_ids: Callable[[list[str]], set[str]] | None = None,
    visibility_seconds: int = 120,
    kinds: Collection[BatchKind] = (),
) -> DlqReplayReport:
    """Move dead-lettered messages (all, or those of `batch_ids` and of `kinds`) back to the
    main queue.

    A replay that dies midway leaves its messages hidden for `visibility_seconds`; the next
    replay after that sends them again (the ledger makes the second copy harmless). Only the
    messages are deleted from the dead-letter queue: an oversize batch's S3 body stays for the
    copy sent back.
    """
    report = DlqReplayReport()
    messages = _receive_all(dead_letters, visibility=visibility_seconds)
    chosen = [
        message
        for message in messages
        if not batch_ids or (message.header is not None and message.header.batch_id in batch_ids)
        if not kinds or (message.header is not None and message.header.kind in kinds)
    ]
    chosen_ids = {message.message_id for message in chosen}
    others = [message for message in messages if message.message_id not in chosen_ids]
    dead_letters.release(others)
    report.left = len(others)
    ids = [message.header.batch_id for message in chosen if message.header is not None]
    loaded = loaded_batch_ids(ids) if loaded_batch_ids and ids else set()
    sent_batches: set[str] = set()
    for message in chosen:
        header = message.header
        name = header.batch_id if header else message.message_id
        if header is not None and header.batch_id in loaded:
            report.already_loaded.append(name)
        elif header is None or header.batch_id not in sent_batches:
            _send_back(queue, message)
            sent_batches.add(name)
            report.sent.append(name)
        dead_letters.delete_messages([message.receipt_handle])
    return report


def _send_back(queue: BatchQueue, message: ReceivedMessage) -> None:
    """The dead letter's body and attributes to `queue` (only the operator's identity may send:
    the loader's IAM policy has no SendMessage)."""
    keep = ("DataType", "StringValue", "BinaryValue")
    queue.sqs.send_message(
        QueueUrl=queue.queue_url,
        MessageBody=message.body,
        MessageAttributes={
            name: {key: value[key] for key in keep if key in value}
            for name, value in message.attributes.items()
        },
    )


# --- quarantine replay ----------------------------------------------------------------------


@dataclass
class QuarantineReplayReport:
    rows: int = 0  # quarantine rows with the reason, not replayed before
    replayed: int = 0  # rows now accepted (at least one event) and marked replayed
    events_sent: int = 0
    rejections_sent: int = 0  # rejections from replayed blobs, sent to the quarantine anew
    still_rejected: Counter[str] = field(default_factory=Counter)  # new reason -> rows
    not_replayable: int = 0  # blob payloads cut at the cap
    batches: int = 0


def replay_payload(row: QuarantineRow) -> bytes | None:
    """The bytes to parse again: the event inside a minimal blob, or the whole blob; None if cut."""
    if not is_blob_rejection(row):
        return b'{"batch":[' + row.payload.encode("utf-8") + b"]}"
    if "payload: the first" in row.detail or ", its first" in row.detail:
        return None
    if "payload: base64 of the raw record" in row.detail:
        return base64.b64decode(row.payload)
    return row.payload.encode("utf-8")


def replay_quarantine(
    rows: Iterable[QuarantineRow],
    *,
    limits: Limits,
    sink: Sink,
    bucket: str,
    max_message_bytes: int,
    mark_replayed: Callable[[Sequence[str]], int],
) -> QuarantineReplayReport:
    """Parse `rows` again with `limits`; send what is accepted now, then mark those rows."""
    report = QuarantineReplayReport()
    records: list[ParsedRecord] = []
    accepted_rows: list[str] = []
    for row in rows:
        report.rows += 1
        data = replay_payload(row)
        if data is None:
            report.not_replayable += 1
            continue
        outcome = parse_blob(
            data,
            received_at=row.received_at,
            source=f"replay:{row.quarantine_id}",
            limits=limits,
        )
        if not outcome.accepted:
            report.still_rejected.update(rejected.reason for rejected in outcome.rejected)
            continue
        records.append(ParsedRecord(str(len(records)), outcome.accepted, outcome.rejected))
        accepted_rows.append(row.quarantine_id)
    if records:
        packed = pack_records(records, bucket=bucket, max_message_bytes=max_message_bytes)
        failed = deliver(packed.batches, sink)
        if failed:
            raise RuntimeError(
                f"{len(failed)} of {len(packed.batches)} replay batches could not be sent; "
                "nothing was marked replayed, run the replay again"
            )
        report.batches = len(packed.batches)
        report.events_sent = packed.events_accepted
        report.rejections_sent = packed.rows_rejected
    report.replayed = mark_replayed(accepted_rows)
    return report


# --- wired to the configuration (the CLI's entry points) ------------------------------------


def replay_quarantine_into(
    queue: BatchQueue,
    warehouse: Warehouse,
    settings: Settings,
    reason: str,
    limit: int | None = None,
) -> QuarantineReplayReport:
    """`replay_quarantine` of the rows with `reason`, sent to `queue` through the Lambda's sink."""
    from analytics_pipeline.ingest.sinks import SqsS3Sink

    return replay_quarantine(
        warehouse.quarantined(reason, limit),
        limits=Limits.from_settings(settings),
        sink=SqsS3Sink(queue.sqs, queue.s3, queue.queue_url, queue.bucket),
        bucket=queue.bucket,
        max_message_bytes=settings.sqs_message_max_bytes,
        mark_replayed=warehouse.mark_quarantine_replayed,
    )


# --- redrive: SQS moves the whole dead-letter queue back itself -----------------------------


@dataclass
class RedriveReport:
    how: str  # "StartMessageMoveTask" or "replay" (where SQS lacks the move task)
    moved: int = 0
    to_move: int = 0
    status: str = ""  # the move task's last status: COMPLETED, FAILED, CANCELLED, RUNNING
    failure_reason: str = ""
    replay: DlqReplayReport | None = None


def redrive_dead_letters(
    dead_letters: BatchQueue,
    queue: BatchQueue,
    *,
    use_move_task: bool,
    max_per_second: int | None = None,
    loaded_batch_ids: Callable[[list[str]], set[str]] | None = None,
    wait_seconds: float = 600.0,
) -> RedriveReport:
    """Every dead letter back to `queue`. With `use_move_task` (AWS) by SQS's own move task
    ("DLQ redrive": server side, at up to `max_per_second` messages a second, no client in the
    loop), waiting up to `wait_seconds` for it to end; the loader's ledger makes a batch already
    loaded harmless, so nothing is checked first. Without it (the local emulators have no move
    task) the same move is done by `replay_dead_letters`."""
    if not use_move_task:
        replayed = replay_dead_letters(dead_letters, queue, loaded_batch_ids=loaded_batch_ids)
        return RedriveReport("replay", moved=len(replayed.sent), replay=replayed)
    source = _queue_arn(dead_letters)
    request: dict[str, Any] = {"SourceArn": source, "DestinationArn": _queue_arn(queue)}
    if max_per_second:
        request["MaxNumberOfMessagesPerSecond"] = max_per_second
    dead_letters.sqs.start_message_move_task(**request)
    deadline = time.monotonic() + wait_seconds
    while True:
        task = dead_letters.sqs.list_message_move_tasks(SourceArn=source, MaxResults=1)
        latest = (task.get("Results") or [{}])[0]
        status = str(latest.get("Status", ""))
        if status != "RUNNING" or time.monotonic() > deadline:
            return RedriveReport(
                "StartMessageMoveTask",
                moved=int(latest.get("ApproximateNumberOfMessagesMoved", 0)),
                to_move=int(latest.get("ApproximateNumberOfMessagesToMove", 0)),
                status=status,
                failure_reason=str(latest.get("FailureReason", "")),
            )
        time.sleep(5.0)


def _queue_arn(queue: BatchQueue) -> str:
    return str(
        queue.sqs.get_queue_attributes(QueueUrl=queue.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    )


# --- wired to the configuration (the CLI's entry points) ------------------------------------


def dead_letters_for(settings: Settings) -> list[DeadLetter]:
    return list_dead_letters(BatchQueue.for_settings(settings, dead_letters=True))


def replay_dead_letters_for(settings: Settings, batch_ids: Collection[str] = ()) -> DlqReplayReport:
    from analytics_pipeline.warehouse import open_warehouse

    return replay_dead_letters(
        BatchQueue.for_settings(settings, dead_letters=True),
        BatchQueue.for_settings(settings),
        batch_ids,
        loaded_batch_ids=open_warehouse(settings).loaded_batch_ids,
    )


def redrive_dead_letters_for(
    settings: Settings, max_per_second: int | None = None
) -> RedriveReport:
    from analytics_pipeline.warehouse import open_warehouse

    return redrive_dead_letters(
        BatchQueue.for_settings(settings, dead_letters=True),
        BatchQueue.for_settings(settings),
        use_move_task=not is_local_endpoint(settings.aws_endpoint_url),
        max_per_second=max_per_second,
        loaded_batch_ids=open_warehouse(settings).loaded_batch_ids,
    )


def replay_quarantine_for(
    settings: Settings, reason: str, limit: int | None = None
) -> QuarantineReplayReport:
    from analytics_pipeline.warehouse import open_warehouse

    return replay_quarantine_into(
        BatchQueue.for_settings(settings), open_warehouse(settings), settings, reason, limit
    )
