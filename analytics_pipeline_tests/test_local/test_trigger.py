"""The trigger's rules with an in-process Kinesis double: retries, checkpoints, event shape."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline.local.trigger import (
    CheckpointStore,
    KinesisTrigger,
    first_failed_index,
    kinesis_event_record,
    split_by_payload,
)
from analytics_pipeline_testkit.doubles import (
    SHARD_ARRIVAL,
    SHARD_STREAM_ARN,
    KinesisShardDouble,
    RecordingHandler,
    shard_settings,
)


def trigger(
    tmp_path: Path, kinesis: KinesisShardDouble, handler: RecordingHandler
) -> KinesisTrigger:
    return KinesisTrigger(
        shard_settings(tmp_path), handler=handler, kinesis=kinesis, retry_base_seconds=0.001
    )


def delivered(handler: RecordingHandler) -> list[str]:
    return [seq for invocation in handler.invocations for seq in invocation]


def test_event_record_has_the_lambda_kinesis_shape() -> None:
    record = {
        "SequenceNumber": "4959",
        "PartitionKey": "device-1",
        "Data": b'{"batch": []}',
        "ApproximateArrivalTimestamp": SHARD_ARRIVAL,
    }

    event_record = kinesis_event_record(
        record, "shardId-000000000001", SHARD_STREAM_ARN, "eu-west-1"
    )

    assert event_record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "device-1",
            "sequenceNumber": "4959",
            "data": base64.b64encode(b'{"batch": []}').decode(),
            "approximateArrivalTimestamp": 1795953600.123,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000001:4959",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/analytics-ingest-local",
        "awsRegion": "eu-west-1",
        "eventSourceARN": SHARD_STREAM_ARN,
    }


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (None, None),
        ({}, None),
        ({"batchItemFailures": []}, None),
        ({"batchItemFailures": [{"itemIdentifier": "30"}, {"itemIdentifier": "20"}]}, 1),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, 0),  # Lambda: whole batch failed
        ({"batchItemFailures": [{"itemIdentifier": "99"}]}, 0),  # not in the batch: same
        ({"batchItemFailures": [{"wrongKey": "20"}]}, 0),
    ],
)
def test_first_failed_index_follows_lambda_rules(
    response: dict[str, Any] | None, expected: int | None
) -> None:
    assert first_failed_index(response, ["10", "20", "30"]) == expected


def test_split_by_payload_keeps_invocations_under_the_limit() -> None:
    records = [{"Data": b"x" * 3000} for _ in range(5)]

    chunks = split_by_payload(records, max_bytes=9200)

    assert [len(c) for c in chunks] == [2, 2, 1]


def test_checkpoints_survive_a_restart_but_not_a_recreated_stream(tmp_path: Path) -> None:
    CheckpointStore(tmp_path, "s", "arn@1").save("shardId-0", "42")

    assert CheckpointStore(tmp_path, "s", "arn@1").get("shardId-0") == "42"
    assert CheckpointStore(tmp_path, "s", "arn@2").get("shardId-0") is None
    assert [p.name for p in tmp_path.iterdir()] == ["trigger-checkpoints-s.json"]
    assert json.loads((tmp_path / "trigger-checkpoints-s.json").read_text())["stream"] == "arn@1"


def test_all_records_delivered_in_order_and_checkpointed(tmp_path: Path) -> None:
    kinesis, handler = KinesisShardDouble([b"r"] * 10), RecordingHandler()

    trigger(tmp_path, kinesis, handler).run_until_idle(timeout=5)

    assert handler.invocations == [["1", "2", "3", "4"], ["5", "6", "7", "8"], ["9", "10"]]
    assert (
        CheckpointStore(tmp_path, "s", f"{SHARD_STREAM_ARN}@{SHARD_ARRIVAL.timestamp():.6f}").get(
            "shardId-000000000000"
        )
        == "10"
    )


def test_restart_resumes_after_the_checkpoint(tmp_path: Path) -> None:
    kinesis = KinesisShardDouble([b"r"] * 6)
    trigger(tmp_path, kinesis, RecordingHandler()).run_until_idle(timeout=5)
    kinesis.records += [b"r"] * 3
    second = RecordingHandler()

    trigger(tmp_path, kinesis, second).run_until_idle(timeout=5)

    assert delivered(second) == ["7", "8", "9"]


def test_batch_item_failure_resumes_from_the_failed_record(tmp_path: Path) -> None:
    handler = RecordingHandler(script=[2])  # first call: record "3" failed

    trigger(tmp_path, KinesisShardDouble([b"r"] * 6), handler).run_until_idle(timeout=5)

    assert handler.invocations == [["1", "2", "3", "4"], ["3", "4", "5", "6"]]


def test_handler_exception_retries_the_same_records_until_success(tmp_path: Path) -> None:
    handler = RecordingHandler(script=["raise", "raise"])

    trigger(tmp_path, KinesisShardDouble([b"r"] * 5), handler).run_until_idle(timeout=5)

    assert handler.invocations == [["1", "2", "3", "4"]] * 3 + [["5"]]


def test_expired_iterator_reopens_from_the_checkpoint(tmp_path: Path) -> None:
    handler = RecordingHandler()
    kinesis = KinesisShardDouble([b"r"] * 9, expire_on_calls={2})

    trigger(tmp_path, kinesis, handler).run_until_idle(timeout=5)

    assert delivered(handler) == [str(n) for n in range(1, 10)]
