"""Lambda's side of the ingest path in-process: Kinesis event records and a handler runtime
whose SQS and S3 are doubles (for unit tests; end-to-end tests run the real trigger)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.parse import parse_blob
from analytics_pipeline.ingest.handler import Runtime
from analytics_pipeline.ingest.sinks import SqsS3Sink
from analytics_pipeline.local.trigger import kinesis_event_record
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.doubles import FakeS3, FakeSqs

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/analytics-events"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)  # arrival and sentAt: no skew to correct


def kinesis_record(sequence_number: str, data: bytes, arrived_at: datetime = NOW) -> dict[str, Any]:
    """A record exactly as Lambda delivers it (the shape the local trigger plays)."""
    record = {
        "SequenceNumber": sequence_number,
        "PartitionKey": "p",
        "Data": data,
        "ApproximateArrivalTimestamp": arrived_at,
    }
    return kinesis_event_record(record, "shardId-000000000003", STREAM_ARN, "us-east-1")


def runtime(sqs: FakeSqs, s3: FakeS3 | None = None, **env: str) -> Runtime:
    """The handler's runtime over doubles; `env` overrides settings (e.g. limits)."""
    settings = Settings.from_env({"AWS_ENDPOINT_URL": "", **env})
    sink = SqsS3Sink(sqs, s3 or FakeS3(), "queue-url", settings.bucket, sleep=lambda _: None)
    return Runtime(settings, sink, parse_blob, Limits.from_settings(settings))
