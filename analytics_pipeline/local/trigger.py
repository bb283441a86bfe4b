"""The local stand-in for Lambda's Kinesis event source mapping.

moto accepts an event source mapping but never runs the function, so this poller does what the
mapping does: read every shard in order, hand batches to the handler in the real Lambda event
shape, and move on only when the handler succeeded. Like a mapping with ReportBatchItemFailures
it resumes from the lowest failed sequence number; an exception retries the same records with
capped exponential backoff. When the stream has a real mapping (a deployed template) its
settings are played (`event_source_mapping.py`: batch size and window, bounded retries with
bisection, record age, the on-failure destination); without one it never skips a record: a
stuck shard stays stuck and says so in the log.

Checkpoints (last fully handled sequence number per shard) are written atomically after every
successful invocation, so a SIGKILL at any moment costs at most a re-delivery of the batch in
flight, which the loader dedupes. Run it with `python -m analytics_pipeline.local.trigger`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from analytics_pipeline import aws
from analytics_pipeline.ingest.iterator_age import TriggerLagReporter
from analytics_pipeline.local.event_source_mapping import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    MappingSettings,
    failure_record,
    mapping_settings_for,
    send_to_sqs_destination,
)
from analytics_pipeline.local.processes import stop_on_signals
from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)

LambdaHandler = Callable[[Mapping[str, Any], Any], Mapping[str, Any] | None]

LAMBDA_PAYLOAD_MAX_BYTES = 6_291_456  # synchronous invoke payload, records base64 inside
_EVENT_RECORD_OVERHEAD_BYTES = 600  # JSON keys, ARNs and ids around each record's data
_RELIST_SHARDS_SECONDS = 10.0
_LAMBDA_TIMEOUT_SECONDS = 60.0
_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class CheckpointStore:
    """Per-shard positions of one stream in one JSON file, replaced atomically on every save.

    The file also records the stream's identity (ARN and creation time): an emulator restarted
    empty recreates the stream with the same name, and old positions would then skip its first
    records, so positions of a different incarnation are discarded.
    """

    def __init__(self, state_dir: Path, stream_name: str, stream_identity: str) -> None:
        self.path = state_dir / f"trigger-checkpoints-{stream_name}.json"
        self.stream_identity = stream_identity
        self.positions: dict[str, str] = {}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("stream") == stream_identity:
                self.positions = dict(saved.get("shards", {}))
            else:
                log.warning(
                    "checkpoints in %s belong to %s, not %s: starting from TRIM_HORIZON",
                    self.path,
                    saved.get("stream"),
                    stream_identity,
                )

    def get(self, shard_id: str) -> str | None:
        return self.positions.get(shard_id)

    def save(self, shard_id: str, sequence_number: str) -> None:
        self.positions[shard_id] = sequence_number
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        content = json.dumps({"stream": self.stream_identity, "shards": self.positions})
        with open(temporary, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object a handler may reasonably use."""

    aws_request_id: str
    deadline: float
    function_name: str = "analytics-ingest-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass
class ShardState:
    shard_id: str
    parent_ids: frozenset[str] = frozenset()
    iterator: str | None = None
    next_poll_at: float = 0.0
    consecutive_failures: int = 0
    closed: bool = False
    batch_limit: int | None = None  # a bisected retry reads fewer records than the batch size
    held: bool = False  # records wait for the mapping's batching window


def kinesis_event_record(
    record: Mapping[str, Any], shard_id: str, stream_arn: str, region: str
) -> dict[str, Any]:
    """One record of the event Lambda delivers for a Kinesis batch, as AWS shapes it."""
    account = stream_arn.split(":")[4]
    sequence_number = str(record["SequenceNumber"])
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(record["Data"]).decode("ascii"),
            "approximateArrivalTimestamp": round(
                record["ApproximateArrivalTimestamp"].timestamp(), 3
            ),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{account}:role/analytics-ingest-local",
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def split_by_payload(
    records: Sequence[Mapping[str, Any]], max_bytes: int = LAMBDA_PAYLOAD_MAX_BYTES
) -> list[list[Mapping[str, Any]]]:
    """Consecutive runs of records whose event stays within Lambda's invoke payload limit."""
    chunks: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    current_bytes = 0
    for record in records:
        size = (len(record["Data"]) + 2) // 3 * 4 + _EVENT_RECORD_OVERHEAD_BYTES
        if current and current_bytes + size > max_bytes:
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(record)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


def first_failed_index(
    response: Mapping[str, Any] | None, sequence_numbers: Sequence[str]
) -> int | None:
    """Index of the record to resume from, or None when the whole batch succeeded.

    Follows Lambda's rules: no response or an empty list is success; an identifier that is
    empty or not in the batch fails the whole batch.
    """
    if not response:
        return None
    failures = response.get("batchItemFailures") or []
    if not failures:
        return None
    positions = {sequence: index for index, sequence in enumerate(sequence_numbers)}
    indices = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not identifier or str(identifier) not in positions:
            return 0
        indices.append(positions[str(identifier)])
    return min(indices)


@dataclass
class KinesisTrigger:
    settings: Settings
    handler: LambdaHandler | None = None
    kinesis: Any = None
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    shards: dict[str, ShardState] = field(default_factory=dict)
    # None: the stream's mapping through the same endpoint when the trigger builds its own
    # clients, local defaults when given a Kinesis client (a test double).
    mapping: MappingSettings | None = None
    send_to_destination: Callable[[str, Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        if self.handler is None:
            from analytics_pipeline.ingest.handler import build_handler

            self.handler = build_handler(self.settings)
        own_clients = self.kinesis is None
        if own_clients:
            self.kinesis = aws.client("kinesis", self.settings)
        summary = self.kinesis.describe_stream_summary(StreamName=self.settings.stream_name)[
            "StreamDescriptionSummary"
        ]
        self.stream_arn = str(summary["StreamARN"])
        if self.mapping is None:
            self.mapping = (
                mapping_settings_for(
                    aws.client("lambda", self.settings), self.stream_arn, self.settings
                )
                if own_clients
                else MappingSettings.local_defaults(self.settings)
            )
        if self.send_to_destination is None:
            sqs = aws.client("sqs", self.settings)
            self.send_to_destination = lambda arn, record: send_to_sqs_destination(sqs, arn, record)
        identity = f"{self.stream_arn}@{summary['StreamCreationTimestamp'].timestamp():.6f}"
        self.checkpoints = CheckpointStore(
            self.settings.state_dir, self.settings.stream_name, identity
        )
        # What the Dagster health sensor shows as the stream's iterator age (ESM's IteratorAge).
        self.lag = TriggerLagReporter(self.settings.state_dir, self.settings.stream_name)
        self._listed_at = -_RELIST_SHARDS_SECONDS
        self._list_shards()

    # -- shard discovery ---------------------------------------------------------------------

    def _list_shards(self) -> None:
        kwargs: dict[str, Any] = {"StreamName": self.settings.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            for shard in page["Shards"]:
                if shard["ShardId"] not in self.shards:
                    parents = {shard.get("ParentShardId"), shard.get("AdjacentParentShardId")}
                    self.shards[shard["ShardId"]] = ShardState(
                        shard["ShardId"], frozenset(p for p in parents if p)
                    )
            if not page.get("NextToken"):
                break
            kwargs = {"NextToken": page["NextToken"]}
        self._listed_at = time.monotonic()

    def _ready(self, shard: ShardState) -> bool:
        """Open, and its parents (after a reshard) are drained: Lambda keeps that order too."""
        if shard.closed:
            return False
        return not any(
            parent in self.shards and not self.shards[parent].closed for parent in shard.parent_ids
        )

    # -- polling -----------------------------------------------------------------------------

    def poll_once(self) -> bool:
        """Poll every due shard once; True when some shard had records."""
        if time.monotonic() - self._listed_at > _RELIST_SHARDS_SECONDS:
            try:
                self._list_shards()
            except (ClientError, BotoCoreError) as error:
                log.warning("listing shards failed: %s", error)
                self._listed_at = time.monotonic()
        had_records = False
        for shard in list(self.shards.values()):
            if self._ready(shard) and shard.next_poll_at <= time.monotonic():
                had_records |= self._poll_shard(shard)
        return had_records

    def seconds_until_due(self) -> float:
        due = [s.next_poll_at for s in self.shards.values() if self._ready(s)]
        if not due:
            return self.settings.trigger_poll_seconds
        return max(0.0, min(due) - time.monotonic())

    def _open_iterator(self, shard: ShardState) -> str:
        checkpoint = self.checkpoints.get(shard.shard_id)
        kwargs: dict[str, Any] = {
            "StreamName": self.settings.stream_name,
            "ShardId": shard.shard_id,
            "ShardIteratorType": "TRIM_HORIZON",
        }
        if checkpoint is not None:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = checkpoint
        return str(self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"])

    def _get_records(self, shard: ShardState) -> dict[str, Any]:
        """GetRecords; an expired iterator (idle over 5 minutes) re-opens from the checkpoint."""
        for attempt in range(2):
            if shard.iterator is None:
                shard.iterator = self._open_iterator(shard)
            try:
                assert self.mapping is not None
                limit = shard.batch_limit or self.mapping.batch_size
                return dict(self.kinesis.get_records(ShardIterator=shard.iterator, Limit=limit))
            except ClientError as error:
                expired = error.response["Error"]["Code"] == "ExpiredIteratorException"
                if not expired or attempt:
                    raise
                log.info("iterator of %s expired; re-opening from checkpoint", shard.shard_id)
                shard.iterator = None
        raise AssertionError("unreachable")

    def _back_off(self, shard: ShardState) -> None:
        shard.consecutive_failures += 1
        delay = min(
            self.retry_base_seconds * 2 ** (shard.consecutive_failures - 1), self.retry_max_seconds
        )
        shard.iterator = None  # the retry re-reads from the checkpoint
        shard.next_poll_at = time.monotonic() + delay

    def _poll_shard(self, shard: ShardState) -> bool:
        try:
            response = self._get_records(shard)
        except (ClientError, BotoCoreError) as error:
            log.warning("reading %s failed: %s", shard.shard_id, error)
            self._back_off(shard)
            return False

        records = response["Records"]
        next_iterator = response.get("NextShardIterator")
        newest = records[-1]["ApproximateArrivalTimestamp"].timestamp() if records else None
        self.lag.saw(shard.shard_id, (time.time() - newest) * 1000 if newest else 0.0)
        if not records:
            shard.iterator = next_iterator
            shard.closed = next_iterator is None
            shard.next_poll_at = time.monotonic() + self.settings.trigger_poll_seconds
            return False
        if self._hold_for_batching_window(shard, records):
            return True
        records = self._drop_expired(shard, records)
        if records is None:
            return True
        for chunk in split_by_payload(records):
            failed_from, raised = self._invoke(shard, chunk)
            if failed_from is not None:
                self._on_failed_invoke(shard, chunk[failed_from:], raised)
                return True
        shard.consecutive_failures = 0
        shard.batch_limit = None
        shard.iterator = next_iterator
        shard.closed = next_iterator is None
        shard.next_poll_at = time.monotonic()
        return True

    # -- the mapping's settings ---------------------------------------------------------------

    def _hold_for_batching_window(self, shard: ShardState, records: Sequence[Any]) -> bool:
        """Less than a batch, younger than the window: read it again once the window closes."""
        assert self.mapping is not None
        limit = shard.batch_limit or self.mapping.batch_size
        age = time.time() - records[0]["ApproximateArrivalTimestamp"].timestamp()
        wait = self.mapping.batching_window_seconds - age
        payload = sum(len(r["Data"]) for r in records) * 4 // 3
        shard.held = len(records) < limit and wait > 0 and payload < LAMBDA_PAYLOAD_MAX_BYTES
        if shard.held:
            shard.iterator = None  # re-read from the checkpoint
            shard.next_poll_at = time.monotonic() + wait
        return shard.held

    def _drop_expired(
        self, shard: ShardState, records: list[Mapping[str, Any]]
    ) -> list[Mapping[str, Any]] | None:
        """Records older than MaximumRecordAgeInSeconds go to the destination, not the handler.

        None: some were dropped and the rest is read again (or the destination failed).
        """
        assert self.mapping is not None
        max_age = self.mapping.maximum_record_age_seconds
        if max_age < 0:
            return records
        oldest_allowed = time.time() - max_age
        expired = [
            r for r in records if r["ApproximateArrivalTimestamp"].timestamp() < oldest_allowed
        ]
        if not expired:
            return records
        # Arrival times only grow along a shard: the expired records are a prefix.
        self._give_up(shard, records[: len(expired)], RECORD_AGE_EXCEEDED)
        return None

    def _on_failed_invoke(
        self, shard: ShardState, failed: Sequence[Mapping[str, Any]], raised: bool
    ) -> None:
        assert self.mapping is not None
        if self.mapping.retries_exhausted(shard.consecutive_failures + 1):
            self._give_up(shard, failed, RETRY_ATTEMPTS_EXHAUSTED)
            return
        if raised and self.mapping.bisect_on_function_error and len(failed) > 1:
            shard.batch_limit = len(failed) // 2
        self._back_off(shard)

    def _give_up(self, shard: ShardState, records: Sequence[Mapping[str, Any]], why: str) -> None:
        """Send the range to the on-failure destination, then checkpoint past it (never before)."""
        assert self.mapping is not None and self.send_to_destination is not None
        destination = self.mapping.on_failure_destination
        record = failure_record(
            condition=why,
            records=records,
            shard_id=shard.shard_id,
            stream_arn=self.stream_arn,
            function_arn=self.mapping.function_arn,
            invoke_count=shard.consecutive_failures + 1,
        )
        if destination:
            try:
                self.send_to_destination(destination, record)
            except (ClientError, BotoCoreError, ValueError) as error:
                log.warning("on-failure destination %s failed: %s", destination, error)
                self._back_off(shard)
                return
        log.warning(
            "gave up %d records of %s (%s): %s",
            len(records),
            shard.shard_id,
            why,
            json.dumps(record["KinesisBatchInfo"]),
        )
        self.checkpoints.save(shard.shard_id, str(records[-1]["SequenceNumber"]))
        shard.consecutive_failures = 0
        shard.batch_limit = None
        shard.iterator = None
        shard.next_poll_at = time.monotonic()

    def _invoke(
        self, shard: ShardState, records: Sequence[Mapping[str, Any]]
    ) -> tuple[int | None, bool]:
        """One handler invocation; checkpoints what succeeded.

        Returns the index of the first record not handled (None: all were) and whether the
        handler raised.
        """
        assert self.handler is not None and self.mapping is not None
        event = {
            "Records": [
                kinesis_event_record(r, shard.shard_id, self.stream_arn, self.settings.aws_region)
                for r in records
            ]
        }
        sequence_numbers = [str(r["SequenceNumber"]) for r in records]
        context = LocalLambdaContext(
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + _LAMBDA_TIMEOUT_SECONDS,
        )
        started = time.perf_counter()
        try:
            response = self.handler(event, context)
        except Exception:
            log.exception(
                "handler failed on %s (%d records from %s); retrying with backoff",
                shard.shard_id,
                len(records),
                sequence_numbers[0],
            )
            return 0, True
        elapsed_ms = (time.perf_counter() - started) * 1000
        failed_index = (
            first_failed_index(response, sequence_numbers)
            if self.mapping.report_batch_item_failures
            else None  # without ReportBatchItemFailures Lambda ignores the response
        )
        done = sequence_numbers if failed_index is None else sequence_numbers[:failed_index]
        if done:
            self.checkpoints.save(shard.shard_id, done[-1])
        stats = (response or {}).get("ingestStats") or {}
        # Lambda's IteratorAge metric: how far behind the stream's head this shard is read.
        iterator_age_ms = (
            time.time() - records[-1]["ApproximateArrivalTimestamp"].timestamp()
        ) * 1000
        log.info(
            "invoke %s records=%d accepted=%s rejected=%s duplicates=%s batches_sent=%s "
            "failed_from=%s ms=%.0f iterator_age_ms=%.0f",
            shard.shard_id,
            len(records),
            stats.get("events_accepted", "?"),
            stats.get("rows_rejected", "?"),
            stats.get("duplicates_dropped", "?"),
            _batches_sent(stats),
            "-" if failed_index is None else sequence_numbers[failed_index],
            elapsed_ms,
            iterator_age_ms,
        )
        return failed_index, False

    # -- loops -------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            try:
                had_records = self.poll_once()
            except Exception:  # never let one bad pass end the trigger
                log.exception("trigger pass failed")
                had_records = False
            if not had_records:
                stop_event.wait(self.seconds_until_due())

    def run_until_idle(self, timeout: float = 60.0) -> None:
        """Poll until a pass finds no records and no shard is backing off (tests and tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            failing = [s for s in self.shards.values() if s.consecutive_failures or s.held]
            for shard in self.shards.values():
                if not shard.consecutive_failures and not shard.held:
                    shard.next_poll_at = min(shard.next_poll_at, now)
            if failing:
                time.sleep(max(0.0, min(s.next_poll_at for s in failing) - now))
            had_records = self.poll_once()
            if not had_records and not any(s.consecutive_failures for s in self.shards.values()):
                return
        raise TimeoutError(f"trigger still had records after {timeout}s")


def _batches_sent(stats: Mapping[str, Any]) -> str:
    if "batches_inline" not in stats:
        return "?"
    return f"{stats['batches_inline']}+{stats['batches_s3']}s3"


def run_trigger(
    settings: Settings,
    stop_event: threading.Event | None = None,
    handler: LambdaHandler | None = None,
) -> None:
    """Poll until `stop_event` is set; without one, until SIGTERM/SIGINT."""
    if not logging.getLogger().handlers:  # started bare (e.g. by the CLI): log to stderr
        logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    if stop_event is None:
        with stop_on_signals() as stop:
            _run_trigger(settings, stop, handler)
    else:
        _run_trigger(settings, stop_event, handler)


def _run_trigger(
    settings: Settings, stop_event: threading.Event, handler: LambdaHandler | None
) -> None:
    trigger: KinesisTrigger | None = None
    while trigger is None:
        try:
            trigger = KinesisTrigger(settings, handler=handler)
        except (ClientError, BotoCoreError) as error:  # emulator or stream not there yet
            log.warning("waiting for stream %s: %s", settings.stream_name, error)
            if stop_event.wait(2.0):
                return
    log.info(
        "trigger polling %s (%d shards), checkpoints in %s; %s",
        settings.stream_name,
        len(trigger.shards),
        trigger.checkpoints.path,
        trigger.mapping.describe() if trigger.mapping else "",
    )
    trigger.run(stop_event)
    log.info("trigger stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    run_trigger(Settings.from_env())


if __name__ == "__main__":
    main()
