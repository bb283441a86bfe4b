"""The Lambda entry point as AWS calls it: settings from the environment, emulated SQS and S3."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from analytics_pipeline import aws
from analytics_pipeline.contract.batches import Payload
from analytics_pipeline.ingest.handler import handler
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.traffic import blob, drain_queue, track_event


def lambda_event(settings: Settings, blobs: list[bytes]) -> dict:
    arrival = datetime.now(UTC).timestamp()
    stream_arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{settings.stream_name}"
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "p",
                    "sequenceNumber": str(seq),
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/ingest",
                "awsRegion": "us-east-1",
                "eventSourceARN": stream_arn,
            }
            for seq, data in enumerate(blobs, start=1)
        ]
    }


def test_handler_reads_settings_from_the_environment_and_sends_inline(
    pipeline_settings: Settings,
) -> None:
    ids = [f"inline-{n}" for n in range(20)]

    response = handler(lambda_event(pipeline_settings, [blob([track_event(i) for i in ids])]), None)

    assert response["batchItemFailures"] == []
    received = drain_queue(pipeline_settings)
    assert [h.payload for h in received.headers] == [Payload.INLINE]
    assert sorted(r.message_id for r in received.events) == sorted(ids)


def test_oversize_batch_goes_through_s3(
    pipeline_settings: Settings, pipeline_env: Callable[[Mapping[str, str]], None]
) -> None:
    env = {**pipeline_settings.to_env(), "ANALYTICS_SQS_MESSAGE_MAX_BYTES": "300"}
    pipeline_env(env)
    ids = [f"s3-{n}" for n in range(50)]

    response = handler(lambda_event(pipeline_settings, [blob([track_event(i) for i in ids])]), None)

    assert response["batchItemFailures"] == []
    assert response["ingestStats"]["batches_s3"] == 1
    received = drain_queue(pipeline_settings)  # follows the pointer into S3
    assert [h.payload for h in received.headers] == [Payload.S3]
    assert sorted(r.message_id for r in received.events) == sorted(ids)
    keys = aws.client("s3", pipeline_settings).list_objects_v2(Bucket=pipeline_settings.bucket)
    assert [o["Key"].split("/")[:2] for o in keys["Contents"]] == [["oversize", "events"]]
