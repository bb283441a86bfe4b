"""In-process doubles of the boto3 SQS and S3 clients, with scriptable failures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

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
