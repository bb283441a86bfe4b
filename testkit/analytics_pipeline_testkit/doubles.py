"""In-process doubles of the boto3 SQS, S3 and Kinesis clients (and of the Lambda handler the
Kinesis trigger calls), with scriptable failures.

For unit tests only: end-to-end tests use the emulator over HTTP.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from analytics_pipeline.settings import Settings

EntryFails = Callable[[dict[str, Any], int], str | None]  # (entry, attempt) -> error code or None


@dataclass
class FakeSqs:
    """Records every SendMessageBatch; `entry_fails` decides which entries fail on which call."""

    entry_fails: EntryFails = lambda entry, attempt: None
    call_fails: Callable[[int], bool] = lambda attempt: False
    calls: list[list[dict[str, Any]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        attempt = len(self.calls)
        self.calls.append(Entries)
        assert len(Entries) <= 10
        if self.call_fails(attempt):
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch")
        failed = []
        for entry in Entries:
            code = self.entry_fails(entry, attempt)
            if code is None:
                self.sent.append(entry)
            else:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "Code": code,
                        "Message": "scripted",
                        "SenderFault": code == "InvalidParameterValue",
                    }
                )
        return {"Successful": [], "Failed": failed} if failed else {"Successful": []}


@dataclass
class FakeS3:
    fail_keys: set[str] = field(default_factory=set)
    objects: dict[str, bytes] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)  # every PutObject key, in call order

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.puts.append(Key)
        if Key in self.fail_keys:
            raise ClientError({"Error": {"Code": "InternalError"}}, "PutObject")
        self.objects[Key] = Body
        return {}


THROTTLED = "ProvisionedThroughputExceededException"


def throttling_error() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": THROTTLED, "Message": "Rate exceeded for shard"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutRecords",
    )


def decode_blob(data: bytes) -> dict[str, Any]:
    """Gzip is detected by its magic bytes, as the pipeline does."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


@dataclass
class PutCall:
    stream_name: str
    records: list[dict[str, Any]]  # {"Data": bytes, "PartitionKey": str}
    failed_indexes: set[int]  # records this call did not store (all of them when it raised)


class KinesisDouble:
    """`script` holds what successive calls do: None (store all), an exception to raise, or a
    set of record indexes to fail with ProvisionedThroughputExceededException. Calls beyond the
    script store everything. With a `gate`, every call waits for it to be set before answering
    (to hold the consumer thread in the middle of a send)."""

    def __init__(
        self, *script: Exception | set[int] | None, gate: threading.Event | None = None
    ) -> None:
        self.gate = gate
        self.script: deque[Exception | set[int] | None] = deque(script)
        self.calls: list[PutCall] = []
        self._lock = threading.Lock()
        self.call_arrived = threading.Event()

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.gate is not None:
            self.call_arrived.set()
            assert self.gate.wait(10), "the test never opened the gate"
        with self._lock:
            action = self.script.popleft() if self.script else None
            records = [dict(record) for record in Records]
            if isinstance(action, Exception):
                self.calls.append(PutCall(StreamName, records, set(range(len(records)))))
                self.call_arrived.set()
                raise action
            failed = {index for index in (action or set()) if index < len(records)}
            self.calls.append(PutCall(StreamName, records, failed))
            self.call_arrived.set()
        results: list[dict[str, Any]] = []
        for index in range(len(records)):
            if index in failed:
                results.append({"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded"})
            else:
                results.append({"SequenceNumber": str(index), "ShardId": "shardId-000000000000"})
        return {"FailedRecordCount": len(failed), "Records": results}

    def stored_records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                record
                for call in self.calls
                for index, record in enumerate(call.records)
                if index not in call.failed_indexes
            ]

    def stored_blobs(self) -> list[dict[str, Any]]:
        return [decode_blob(record["Data"]) for record in self.stored_records()]

    def stored_events(self) -> list[dict[str, Any]]:
        return [event for blob in self.stored_blobs() for event in blob["batch"]]


# -- the Kinesis trigger's side: one shard to read, a handler to call ------------------------

SHARD_STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
SHARD_ARRIVAL = datetime(2026, 11, 29, 12, 0, 0, 123000, tzinfo=UTC)


@dataclass
class KinesisShardDouble:
    """One shard of records with sequence numbers 1..n; iterators encode the last one read."""

    records: list[bytes]
    expire_on_calls: set[int] = field(default_factory=set)
    get_records_calls: int = 0
    created: datetime = SHARD_ARRIVAL

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {
            "StreamDescriptionSummary": {
                "StreamARN": SHARD_STREAM_ARN,
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
                "ApproximateArrivalTimestamp": SHARD_ARRIVAL,
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


def shard_settings(state_dir: Path, batch_size: int = 4) -> Settings:
    """Settings for a trigger reading `KinesisShardDouble` (stream `s`), state in `state_dir`."""
    return Settings.from_env(
        {
            "ANALYTICS_STREAM_NAME": "s",
            "ANALYTICS_STATE_DIR": str(state_dir),
            "ANALYTICS_TRIGGER_BATCH_SIZE": str(batch_size),
            "ANALYTICS_TRIGGER_POLL_SECONDS": "0.01",
        }
    )
