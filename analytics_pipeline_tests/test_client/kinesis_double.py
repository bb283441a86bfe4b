"""An in-process stand-in for a boto3 Kinesis client: records PutRecords calls, fails on cue."""

from __future__ import annotations

import gzip
import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

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
