"""The Lambda entry point: one Kinesis batch in, pre-aggregated day batches out to SQS (and S3).

`handler` is what AWS calls (`analytics_pipeline.ingest.handler.handler`); the local trigger calls
the same code in-process through `build_handler(settings)`. Clients are built once per container
and reused across invocations. Nothing here imports Dagster or pandas.

The response is the partial-batch shape Lambda understands (`batchItemFailures`, needs
`ReportBatchItemFailures` on the mapping) plus an `ingestStats` object with this invocation's
counts, which Lambda ignores and the local trigger logs.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.rows import EventRow, QuarantineRow
from analytics_pipeline.ingest.packing import PackedBatch, ParsedRecord, pack_records
from analytics_pipeline.ingest.sinks import OutgoingMessage
from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)  # the Lambda runtime's root logger only passes WARNING and up


class ParseOutcome(Protocol):
    accepted: list[EventRow]
    rejected: list[QuarantineRow]


ParseBlob = Callable[..., ParseOutcome]  # contract.parse.parse_blob's signature
LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


class Sink(Protocol):
    def put_object(self, key: str, data: bytes) -> bool: ...

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> set[int]: ...


@dataclass(frozen=True)
class Runtime:
    """What one container keeps between invocations."""

    settings: Settings
    sink: Sink
    parse_blob: ParseBlob
    limits: Limits


def _default_parse_blob() -> ParseBlob:
    from analytics_pipeline.contract.parse import parse_blob

    return parse_blob


def build_runtime(settings: Settings) -> Runtime:
    from analytics_pipeline import aws
    from analytics_pipeline.ingest.sinks import SqsS3Sink

    sqs = aws.client("sqs", settings)
    queue_url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
    sink = SqsS3Sink(sqs, aws.client("s3", settings), queue_url, settings.bucket)
    return Runtime(settings, sink, _default_parse_blob(), Limits.from_settings(settings))


_runtimes: dict[Settings, Runtime] = {}


def runtime_for(settings: Settings) -> Runtime:
    runtime = _runtimes.get(settings)
    if runtime is None:
        runtime = _runtimes[settings] = build_runtime(settings)
    return runtime


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda entry point (Kinesis event source mapping)."""
    return process_event(event, runtime_for(Settings.from_env()))


def build_handler(settings: Settings) -> LambdaHandler:
    """A handler bound to explicit settings, for the local trigger and tests."""

    def bound_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        return process_event(event, runtime_for(settings))

    return bound_handler


def parse_records(event: Mapping[str, Any], runtime: Runtime) -> list[ParsedRecord]:
    parsed: list[ParsedRecord] = []
    for record in event.get("Records") or []:
        kinesis = record["kinesis"]
        sequence_number = str(kinesis["sequenceNumber"])
        shard_id = str(record["eventID"]).split(":", 1)[0]
        stream = str(record["eventSourceARN"]).rsplit("/", 1)[-1]
        outcome = runtime.parse_blob(
            base64.b64decode(kinesis["data"]),
            received_at=datetime.fromtimestamp(float(kinesis["approximateArrivalTimestamp"]), UTC),
            source=f"kinesis:{stream}:{shard_id}:{sequence_number}",
            limits=runtime.limits,
        )
        parsed.append(ParsedRecord(sequence_number, outcome.accepted, outcome.rejected))
    return parsed


def deliver(batches: Sequence[PackedBatch], sink: Sink) -> list[PackedBatch]:
    """S3 objects first, then their pointers and the inline batches; returns what failed."""
    failed = [
        b for b in batches if b.s3_key is not None and not sink.put_object(b.s3_key, b.compressed)
    ]
    failed_ids = {id(b) for b in failed}
    to_send = [b for b in batches if id(b) not in failed_ids]
    unsent = sink.send_messages(
        [OutgoingMessage(b.body, b.message_attributes, b.message_bytes) for b in to_send]
    )
    return failed + [to_send[index] for index in sorted(unsent)]


def process_event(event: Mapping[str, Any], runtime: Runtime) -> dict[str, Any]:
    started = time.perf_counter()
    parsed = parse_records(event, runtime)
    packed = pack_records(
        parsed,
        bucket=runtime.settings.bucket,
        max_message_bytes=runtime.settings.sqs_message_max_bytes,
    )
    failed = deliver(packed.batches, runtime.sink)
    failures: list[dict[str, str]] = []
    if failed:
        # Lambda retries from this record; batches re-sent by the retry are deduped downstream.
        lowest = min((s for b in failed for s in b.source_sequence_numbers), key=int)
        failures.append({"itemIdentifier": lowest})
    stats = {
        "records": len(parsed),
        "events_accepted": packed.events_accepted,
        "rows_rejected": packed.rows_rejected,
        "duplicates_dropped": packed.duplicates_dropped,
        "batches_inline": sum(1 for b in packed.batches if b.s3_key is None),
        "batches_s3": sum(1 for b in packed.batches if b.s3_key is not None),
        "batches_failed": len(failed),
        "bytes": sum(len(b.compressed) for b in packed.batches),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    log.info(json.dumps({"ingest": stats, "batchItemFailures": failures}))
    return {"batchItemFailures": failures, "ingestStats": stats}
