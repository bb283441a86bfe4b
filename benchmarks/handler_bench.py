"""Handler throughput on one core next to the decode-only ceiling of the same blobs.

The handler side is the real `process_event` (base64, gunzip, validating decode, skew
correction, dedupe, day packing, gzip, SQS chunking through the real `SqsS3Sink`) writing to
in-process SQS/S3 doubles, so AWS latency is not measured. The ceiling is gunzip plus
`msgspec.json.decode` of the same blobs. Rounds are interleaved and the best of each kept, so a
busy neighbour on a shared box slows both sides alike.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from analytics_pipeline.contract.batches import (
    BatchHeader,
    Payload,
    body_from_inline,
    s3_pointer_from_body,
)
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.parse import parse_blob
from analytics_pipeline.ingest.handler import Runtime, process_event
from analytics_pipeline.ingest.sinks import SqsS3Sink
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.doubles import FakeS3, FakeSqs
from benchmarks.workload import Workload, lambda_events


@dataclass
class CapturedOutput:
    """What the handler sent: SQS entries (body + attributes) and S3 objects by key."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)

    def batches(self) -> list[tuple[BatchHeader, bytes]]:
        """Each message's header and gzip NDJSON body (read from S3 when it is a pointer)."""
        found = []
        for message in self.messages:
            header = BatchHeader.from_message_attributes(message["MessageAttributes"])
            body = message["MessageBody"]
            if header.payload is Payload.S3:
                found.append((header, self.objects[s3_pointer_from_body(body).key]))
            else:
                found.append((header, body_from_inline(body)))
        return found


@dataclass(frozen=True)
class HandlerFigures:
    events: int
    blobs: int
    invocations: int
    handler_events_per_second: float
    decode_events_per_second: float
    sqs_messages: int
    sqs_message_bytes: int

    @property
    def ratio(self) -> float:
        return self.handler_events_per_second / self.decode_events_per_second


def in_process_runtime(settings: Settings | None = None) -> tuple[Runtime, CapturedOutput]:
    settings = settings or Settings.from_env({})
    sqs, s3 = FakeSqs(), FakeS3()
    sink = SqsS3Sink(sqs, s3, "in-process-queue", settings.bucket)
    captured = CapturedOutput(sqs.sent, s3.objects)
    return Runtime(settings, sink, parse_blob, Limits.from_settings(settings)), captured


def run_handler(events: list[dict[str, Any]]) -> CapturedOutput:
    runtime, captured = in_process_runtime()
    for event in events:
        response = process_event(event, runtime)
        if response["batchItemFailures"]:
            raise RuntimeError(f"in-process sinks never fail, got {response}")
    return captured


def best_interleaved(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def measure_handler(workload: Workload, rounds: int = 5) -> HandlerFigures:
    events = lambda_events(workload.blobs)
    captured = run_handler(events)  # warm-up, and the check that every event came out
    accepted = sum(
        int(m["MessageAttributes"]["row_count"]["StringValue"]) for m in captured.messages
    )
    if accepted != workload.events:
        raise RuntimeError(f"handler accepted {accepted} of {workload.events} events")

    def decode_only() -> None:
        for blob in workload.blobs:
            msgspec.json.decode(zlib.decompress(blob, wbits=31))

    best = best_interleaved({"handler": lambda: run_handler(events), "decode": decode_only}, rounds)
    return HandlerFigures(
        events=workload.events,
        blobs=len(workload.blobs),
        invocations=len(events),
        handler_events_per_second=workload.events / best["handler"],
        decode_events_per_second=workload.events / best["decode"],
        sqs_messages=len(captured.messages),
        sqs_message_bytes=sum(len(m["MessageBody"]) for m in captured.messages),
    )
