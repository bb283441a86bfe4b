"""The SQS side of loading: receive without deleting, read bodies, delete after the commit.

A body is inline in its message (base64 gzip NDJSON) or, when the batch was too big for one
message, an S3 object the message points at. Nothing is staged: the loader reads the body when
it loads the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from analytics_pipeline.chunking import chunked
from analytics_pipeline.contract.batches import (
    BatchHeader,
    InvalidBatchMessage,
    Payload,
    body_from_inline,
    s3_pointer_from_body,
)
from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)

SQS_BATCH = 10  # SQS receive/delete batch limit


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    receive_count: int
    body: str
    header: BatchHeader | None  # None: not a batch this pipeline wrote (left for the DLQ)
    error: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, repr=False)  # as SQS sent them

    def batch_header(self) -> BatchHeader:
        """The header, or why this message is not a batch this pipeline wrote."""
        if self.header is None:
            raise InvalidBatchMessage(self.error or "not a batch message")
        return self.header


class BatchQueue:
    """One SQS queue of batches plus the S3 bucket that holds staged and oversize bodies."""

    def __init__(self, sqs: Any, s3: Any, queue_url: str, bucket: str) -> None:
        self.sqs = sqs
        self.s3 = s3
        self.queue_url = queue_url
        self.bucket = bucket

    @classmethod
    def connect(cls, sqs: Any, s3: Any, queue_name: str, bucket: str) -> BatchQueue:
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        return cls(sqs, s3, queue_url, bucket)

    @classmethod
    def for_settings(cls, settings: Settings, *, dead_letters: bool = False) -> BatchQueue:
        """The configured queue (or its dead-letter queue), with clients from `aws.client`."""
        from analytics_pipeline import aws

        name = settings.dlq_name if dead_letters else settings.queue_name
        return cls.connect(
            aws.client("sqs", settings), aws.client("s3", settings), name, settings.bucket
        )

    def receive(
        self,
        max_messages: int,
        visibility_timeout: int,
        time_budget_seconds: float = 20.0,
        first_wait_seconds: int = 1,
    ) -> list[ReceivedMessage]:
        """Receive up to `max_messages` (hidden for `visibility_timeout` s), never deleting.

        The first call long-polls briefly: a short poll samples only some SQS servers and can
        answer empty while messages wait.
        """
        deadline = time.monotonic() + time_budget_seconds
        received: dict[str, ReceivedMessage] = {}  # SQS may hand out one message twice
        wait_seconds = first_wait_seconds
        while len(received) < max_messages and time.monotonic() < deadline:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(SQS_BATCH, max_messages - len(received)),
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            wait_seconds = 0
            messages = response.get("Messages", [])
            if not messages:
                break
            for message in messages:
                received.setdefault(message["MessageId"], _to_received(message))
        return list(received.values())

    def body(self, message: ReceivedMessage) -> bytes:
        """The batch's gzip NDJSON, inline in the message or behind its S3 pointer."""
        if message.batch_header().payload is Payload.S3:
            pointer = s3_pointer_from_body(message.body)
            return self.s3.get_object(Bucket=pointer.bucket, Key=pointer.key)["Body"].read()
        return body_from_inline(message.body)

    def delete(self, messages: Sequence[ReceivedMessage]) -> int:
        """Delete loaded messages, then the S3 objects of their oversize bodies.

        Called only after the load is committed and recorded, when a body is never needed
        again (a redelivered copy is skipped by the ledger without reading it). A stale receipt
        handle (the message was received again meanwhile) fails here and is only logged: the
        message comes back, the ledger recognises its batch id and a later load deletes it.
        """
        deleted = self.delete_messages([message.receipt_handle for message in messages])
        objects = {
            (pointer.bucket, pointer.key)
            for message in messages
            if message.header is not None and message.header.payload is Payload.S3
            for pointer in [s3_pointer_from_body(message.body)]
        }
        for bucket, key in sorted(objects):
            try:
                self.s3.delete_object(Bucket=bucket, Key=key)
            except ClientError as error:  # an orphan is harmless; a lifecycle rule expires it
                log.warning("could not delete batch object %s: %s", key, error)
        return deleted

    def delete_messages(self, receipt_handles: Sequence[str]) -> int:
        """Delete messages only (their bodies' objects stay); returns messages deleted."""
        deleted = 0
        for chunk in chunked(receipt_handles, SQS_BATCH):
            response = self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(chunk)],
            )
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                log.warning("SQS delete failed (will be redelivered and skipped): %s", failure)
        return deleted

    def release(self, messages: Iterable[ReceivedMessage]) -> None:
        """Make messages visible again at once (they belong to another run)."""
        handles = [message.receipt_handle for message in messages]
        for chunk in chunked(handles, SQS_BATCH):
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for i, handle in enumerate(chunk)
                ],
            )

    def depth(self) -> dict[str, int]:
        """Messages waiting (`visible`) and received but not deleted yet (`in_flight`)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        }


def _to_received(message: dict[str, Any]) -> ReceivedMessage:
    receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
    try:
        header: BatchHeader | None = BatchHeader.from_message_attributes(
            message.get("MessageAttributes", {})
        )
        error = None
    except InvalidBatchMessage as invalid:
        header, error = None, str(invalid)
    return ReceivedMessage(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        receive_count=receive_count,
        body=message["Body"],
        header=header,
        error=error,
        attributes=message.get("MessageAttributes", {}),
    )
