"""The Kinesis event source mapping the local trigger plays, and what it sends when it gives up.

When the stream has a mapping (the CloudFormation template deploys one; the emulator keeps it as
configuration and never invokes it), its settings come from `ListEventSourceMappings`, so the
trigger plays exactly what production runs: batch size, batching window, bounded retries with
bisection, record age, partial batch responses, the on-failure destination. Without a mapping
(`analytics-pipeline dev` creates none) the trigger keeps the local defaults: the batch size
of `ANALYTICS_TRIGGER_BATCH_SIZE`, no window, and it never gives a record up.

`ParallelizationFactor` is read but played as 1: one batch per shard at a time (ordering is what
the handler's correctness needs; concurrency within a shard only changes throughput). Retries
count every failed invocation of a shard's batch, bisected halves included.

Absent fields take Lambda's own defaults (retries and record age -1, i.e. forever; no bisect;
no partial batch responses), as AWS does for a mapping created without them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


@dataclass(frozen=True)
class MappingSettings:
    """What the trigger plays; -1 means "forever" as in Lambda's API."""

    batch_size: int
    batching_window_seconds: float = 0.0
    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = -1
    bisect_on_function_error: bool = False
    report_batch_item_failures: bool = True
    on_failure_destination: str | None = None
    parallelization_factor: int = 1
    function_arn: str | None = None
    mapping_id: str | None = None  # None: local defaults, no mapping on the stream

    @classmethod
    def local_defaults(cls, settings: Settings) -> MappingSettings:
        return cls(batch_size=settings.trigger_batch_size)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> MappingSettings:
        """From one `ListEventSourceMappings` entry."""
        destination = ((mapping.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
            "Destination"
        )
        return cls(
            batch_size=int(mapping.get("BatchSize", 100)),
            batching_window_seconds=float(mapping.get("MaximumBatchingWindowInSeconds", 0)),
            maximum_retry_attempts=int(mapping.get("MaximumRetryAttempts", -1)),
            maximum_record_age_seconds=int(mapping.get("MaximumRecordAgeInSeconds", -1)),
            bisect_on_function_error=bool(mapping.get("BisectBatchOnFunctionError", False)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (mapping.get("FunctionResponseTypes") or []),
            on_failure_destination=destination or None,
            parallelization_factor=int(mapping.get("ParallelizationFactor", 1)),
            function_arn=mapping.get("FunctionArn"),
            mapping_id=mapping.get("UUID"),
        )

    def retries_exhausted(self, failed_attempts: int) -> bool:
        """True once `failed_attempts` invocations of a batch failed: the first plus its retries."""
        return 0 <= self.maximum_retry_attempts < failed_attempts

    def describe(self) -> str:
        source = f"mapping {self.mapping_id}" if self.mapping_id else "local defaults"
        return (
            f"{source}: batch {self.batch_size}, window {self.batching_window_seconds:g} s, "
            f"retries {self.maximum_retry_attempts}, record age {self.maximum_record_age_seconds}"
            f" s, bisect {self.bisect_on_function_error}, partial batch responses "
            f"{self.report_batch_item_failures}, on failure {self.on_failure_destination or '-'}"
        )


def mapping_settings_for(
    lambda_client: Any, stream_arn: str, settings: Settings
) -> MappingSettings:
    """The enabled mapping of the stream; local defaults when there is none or no Lambda API."""
    try:
        mappings = lambda_client.list_event_source_mappings(EventSourceArn=stream_arn)[
            "EventSourceMappings"
        ]
    except (ClientError, BotoCoreError) as error:
        log.warning("could not list event source mappings (%s): local defaults", error)
        return MappingSettings.local_defaults(settings)
    enabled = [m for m in mappings if m.get("State", "Enabled") in ("Enabled", "Enabling")]
    if not enabled:
        return MappingSettings.local_defaults(settings)
    if len(enabled) > 1:
        log.warning("%d mappings on %s: playing the first", len(enabled), stream_arn)
    return MappingSettings.from_mapping(enabled[0])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure_record(
    *,
    condition: str,
    records: Sequence[Mapping[str, Any]],
    shard_id: str,
    stream_arn: str,
    function_arn: str | None,
    invoke_count: int,
) -> dict[str, Any]:
    """The message Lambda sends to an on-failure destination for a Kinesis batch it dropped.

    It names the shard and sequence range only: the records stay in the stream until its
    retention ends, which is where a replay reads them from.
    """
    return {
        "requestContext": {
            "requestId": None,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "version": "1.0",
        "timestamp": _iso(datetime.now(UTC)),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": str(records[0]["SequenceNumber"]),
            "endSequenceNumber": str(records[-1]["SequenceNumber"]),
            "approximateArrivalOfFirstRecord": _iso(records[0]["ApproximateArrivalTimestamp"]),
            "approximateArrivalOfLastRecord": _iso(records[-1]["ApproximateArrivalTimestamp"]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


def send_to_sqs_destination(sqs: Any, destination_arn: str, record: Mapping[str, Any]) -> None:
    """Send one failure record to an SQS on-failure destination (the only kind played locally)."""
    if destination_arn.split(":")[2] != "sqs":
        raise ValueError(f"only SQS on-failure destinations are played locally: {destination_arn}")
    url = sqs.get_queue_url(QueueName=destination_arn.rsplit(":", 1)[-1])["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
