"""The trigger's rules with an in-process Kinesis double: retries, checkpoints, event shape."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from analytics_pipeline.local.trigger import (
    CheckpointStore,
    KinesisTrigger,
    first_failed_index,
    kinesis_event_record,
    split_by_payload,
)
from analytics_pipeline.settings import Settings

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
ARRIVAL = datetime(2026, 11, 29, 12, 0, 0, 123000, tzinfo=UTC)


@dataclass
class FakeKinesis:
    """One shard of records with sequence numbers 1..n; iterators encode the last one read."""

    records: list[bytes]
    expire_on_calls: set[int] = field(default_factory=set)
    get_records_calls: int = 0
    created: datetime = ARRIVAL

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {
            "StreamDescriptionSummary": {
                "StreamARN": STREAM_ARN,
                "StreamCreationTimestamp": self.created,
            }
        }

    def list_shards(self, **_: Any) -> dict[str, Any]:
        return {"Shards": [{"ShardId": "shardId-000000000000"}]}

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        after = int(kwargs.get("StartingSequenceNumber", 0))
        if kwargs["ShardIteratorType"] == "TRIM_HORIZON":
            after = 0
        return {"ShardIterator": str(after)}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.get_records_calls += 1
        if self.get_records_calls in self.expire_on_calls:
            raise ClientError({"Error": {"Code": "ExpiredIteratorException"}}, "GetRecords")
        after = int(ShardIterator)
        chunk = [
            {
                "SequenceNumber": str(seq),
                "PartitionKey": "p",
                "Data": self.records[seq - 1],
                "ApproximateArrivalTimestamp": ARRIVAL,
            }
            for seq in range(after + 1, min(after + Limit, len(self.records)) + 1)
        ]
        last = int(chunk[-1]["SequenceNumber"]) if chunk else after
        return {"Records": chunk, "NextShardIterator": str(last), "MillisBehindLatest": 0}


@dataclass
class RecordingHandler:
    """Sees every invocation; `script` decides per call: None, an index to fail at, or raise."""

    script: list[int | str | None] = field(default_factory=list)
    invocations: list[list[str]] = field(default_factory=list)

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        self.invocations.append(sequences)
        action = self.script.pop(0) if self.script else None
        if action == "raise":
            raise RuntimeError("scripted handler failure")
        if isinstance(action, int):
            return {"batchItemFailures": [{"itemIdentifier": sequences[action]}]}
        return {"batchItemFailures": []}


def settings(tmp_path: Path, batch_size: int = 4) -> Settings:
    return Settings.from_env(
        {
            "ANALYTICS_STREAM_NAME": "s",
            "ANALYTICS_STATE_DIR": str(tmp_path),
            "ANALYTICS_TRIGGER_BATCH_SIZE": str(batch_size),
            "ANALYTICS_TRIGGER_POLL_SECONDS": "0.01",
        }
    )


def trigger(tmp_path: Path, kinesis: FakeKinesis, handler: RecordingHandler) -> KinesisTrigger:
    return KinesisTrigger(
        settings(tmp_path), handler=handler, kinesis=kinesis, retry_base_seconds=0.001
    )


def delivered(handler: RecordingHandler) -> list[str]:
    return [seq for invocation in handler.invocations for seq in invocation]


def test_event_record_has_the_lambda_kinesis_shape() -> None:
    record = {
        "SequenceNumber": "4959",
        "PartitionKey": "device-1",
        "Data": b'{"batch": []}',
        "ApproximateArrivalTimestamp": ARRIVAL,
    }

    event_record = kinesis_event_record(record, "shardId-000000000001", STREAM_ARN, "eu-west-1")

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
        "eventSourceARN": STREAM_ARN,
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
    kinesis, handler = FakeKinesis([b"r"] * 10), RecordingHandler()

    trigger(tmp_path, kinesis, handler).run_until_idle(timeout=5)

    assert handler.invocations == [["1", "2", "3", "4"], ["5", "6", "7", "8"], ["9", "10"]]
    assert (
        CheckpointStore(tmp_path, "s", f"{STREAM_ARN}@{ARRIVAL.timestamp():.6f}").get(
            "shardId-000000000000"
        )
        == "10"
    )


def test_restart_resumes_after_the_checkpoint(tmp_path: Path) -> None:
    kinesis = FakeKinesis([b"r"] * 6)
    trigger(tmp_path, kinesis, RecordingHandler()).run_until_idle(timeout=5)
    kinesis.records += [b"r"] * 3
    second = RecordingHandler()

    trigger(tmp_path, kinesis, second).run_until_idle(timeout=5)

    assert delivered(second) == ["7", "8", "9"]


def test_batch_item_failure_resumes_from_the_failed_record(tmp_path: Path) -> None:
    handler = RecordingHandler(script=[2])  # first call: record "3" failed

    trigger(tmp_path, FakeKinesis([b"r"] * 6), handler).run_until_idle(timeout=5)

    assert handler.invocations == [["1", "2", "3", "4"], ["3", "4", "5", "6"]]


def test_handler_exception_retries_the_same_records_until_success(tmp_path: Path) -> None:
    handler = RecordingHandler(script=["raise", "raise"])

    trigger(tmp_path, FakeKinesis([b"r"] * 5), handler).run_until_idle(timeout=5)

    assert handler.invocations == [["1", "2", "3", "4"]] * 3 + [["5"]]


def test_expired_iterator_reopens_from_the_checkpoint(tmp_path: Path) -> None:
    handler = RecordingHandler()
    kinesis = FakeKinesis([b"r"] * 9, expire_on_calls={2})

    trigger(tmp_path, kinesis, handler).run_until_idle(timeout=5)

    assert delivered(handler) == [str(n) for n in range(1, 10)]
