"""Create the stream, queues and bucket the pipeline needs; safe to run on every start.

Existing resources are kept (their contents survive a restart); the queue attributes the pipeline
relies on (1 MiB messages, redrive to the dead-letter queue) are re-applied each time, because an
older queue may carry SQS's former 256 KiB default.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from analytics_pipeline import aws
from analytics_pipeline.settings import Settings

SQS_MAX_MESSAGE_BYTES = 1_048_576
SQS_MAX_RETENTION_SECONDS = 1_209_600  # 14 days: the most SQS allows, time to notice and replay
_STREAM_ACTIVE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Resources:
    stream_arn: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    bucket: str


def ensure_stream(kinesis: Any, name: str, shards: int) -> str:
    """Create the stream if missing, wait until ACTIVE; returns its ARN."""
    try:
        kinesis.create_stream(StreamName=name, ShardCount=shards)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
    deadline = time.monotonic() + _STREAM_ACTIVE_TIMEOUT_SECONDS
    while True:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return str(summary["StreamARN"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {name} not ACTIVE after {_STREAM_ACTIVE_TIMEOUT_SECONDS}s")
        time.sleep(0.5)


def ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    """Create the queue or bring an existing one to `attributes`; returns (url, arn)."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ):
            raise
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return str(url), str(arn)


def ensure_bucket(s3: Any, name: str, region: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as error:
        if error.response["Error"]["Code"] not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


def ensure_resources(settings: Settings) -> Resources:
    """Idempotently create the stream, the queue with its dead-letter queue, and the bucket."""
    stream_arn = ensure_stream(
        aws.client("kinesis", settings), settings.stream_name, settings.stream_shards
    )
    sqs = aws.client("sqs", settings)
    dlq_url, dlq_arn = ensure_queue(
        sqs,
        settings.dlq_name,
        {
            "MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES),
            "MessageRetentionPeriod": str(SQS_MAX_RETENTION_SECONDS),
        },
    )
    queue_url, queue_arn = ensure_queue(
        sqs,
        settings.queue_name,
        {
            "MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES),
            "MessageRetentionPeriod": str(SQS_MAX_RETENTION_SECONDS),
            "VisibilityTimeout": str(settings.sqs_visibility_seconds),
            "ReceiveMessageWaitTimeSeconds": "0",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.queue_max_receives}
            ),
        },
    )
    ensure_bucket(aws.client("s3", settings), settings.bucket, settings.aws_region)
    return Resources(
        stream_arn=stream_arn,
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        dlq_arn=dlq_arn,
        bucket=settings.bucket,
    )
