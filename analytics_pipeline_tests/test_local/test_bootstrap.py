"""Bootstrap against the real emulator: idempotent, and the dead-letter redrive really works."""

from __future__ import annotations

import json
from pathlib import Path

from analytics_pipeline import aws
from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env


def test_ensure_resources_is_idempotent_and_configures_the_queue(
    aws_endpoint: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(unique_settings_env(aws_endpoint, tmp_path))
    first = ensure_resources(settings)
    aws.client("sqs", settings).send_message(QueueUrl=first.queue_url, MessageBody="kept")
    second = ensure_resources(settings)

    assert second == first
    sqs = aws.client("sqs", settings)
    attributes = sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert attributes["MaximumMessageSize"] == "1048576"
    assert attributes["VisibilityTimeout"] == str(settings.sqs_visibility_seconds)
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": first.dlq_arn,
        "maxReceiveCount": settings.queue_max_receives,
    }
    assert attributes["ApproximateNumberOfMessages"] == "1"  # the second run kept the contents
    stream = aws.client("kinesis", settings).describe_stream_summary(
        StreamName=settings.stream_name
    )["StreamDescriptionSummary"]
    assert stream["OpenShardCount"] == settings.stream_shards
    assert stream["StreamARN"] == first.stream_arn
    aws.client("s3", settings).head_bucket(Bucket=settings.bucket)


def test_ensure_resources_repairs_a_queue_with_the_old_256_kib_limit(
    aws_endpoint: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(unique_settings_env(aws_endpoint, tmp_path))
    sqs = aws.client("sqs", settings)
    sqs.create_queue(QueueName=settings.queue_name, Attributes={"MaximumMessageSize": "262144"})

    resources = ensure_resources(settings)

    attributes = sqs.get_queue_attributes(
        QueueUrl=resources.queue_url, AttributeNames=["MaximumMessageSize", "RedrivePolicy"]
    )["Attributes"]
    assert attributes["MaximumMessageSize"] == "1048576"
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"] == resources.dlq_arn


def test_message_received_too_often_moves_to_the_dead_letter_queue(
    aws_endpoint: str, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        unique_settings_env(aws_endpoint, tmp_path, ANALYTICS_QUEUE_MAX_RECEIVES="2")
    )
    resources = ensure_resources(settings)
    sqs = aws.client("sqs", settings)
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody="poison")

    for _ in range(2):  # received, never deleted: a run that failed twice
        got = sqs.receive_message(QueueUrl=resources.queue_url, VisibilityTimeout=0)
        assert len(got["Messages"]) == 1
    after_limit = sqs.receive_message(QueueUrl=resources.queue_url, VisibilityTimeout=0)

    assert "Messages" not in after_limit
    dead = sqs.receive_message(QueueUrl=resources.dlq_url)["Messages"]
    assert [m["Body"] for m in dead] == ["poison"]
