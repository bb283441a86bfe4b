"""The handler's writes to AWS: batch objects to S3, batch messages to SQS.

Transient call failures (throttling, 5xx, dropped connections) are botocore's to retry: the
clients come from `aws.client` with its standard retry mode, and a call that still fails after
those attempts is reported, not retried again here. What botocore cannot see is a
SendMessageBatch that succeeds for some entries and fails for others in one answer: only those
failed entries are sent again, a few times with backoff. Whatever still fails is reported to the
caller, which turns it into a Lambda batch item failure rather than losing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from analytics_pipeline.chunking import chunked

SQS_BATCH_MAX_ENTRIES = 10
SQS_BATCH_MAX_BYTES = 1_048_576  # total of all entries of one SendMessageBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    body: str
    attributes: dict[str, dict[str, str]]
    size: int  # as SQS counts it (body + attributes)


def chunk_messages(
    messages: Sequence[OutgoingMessage],
    max_entries: int = SQS_BATCH_MAX_ENTRIES,
    max_bytes: int = SQS_BATCH_MAX_BYTES,
) -> list[list[int]]:
    """Indices of `messages` grouped into SendMessageBatch calls within both SQS limits."""
    return list(
        chunked(range(len(messages)), max_entries, max_bytes, weight=lambda i: messages[i].size)
    )


@dataclass
class SqsS3Sink:
    """Writes through boto3 clients (real or emulated); re-sends only the entries SQS failed."""

    sqs: Any
    s3: Any
    queue_url: str
    bucket: str
    attempts: int = 4  # of each partially failed entry
    base_delay_seconds: float = 0.1
    sleep: Callable[[float], None] = time.sleep

    def _backoff(self, attempt: int) -> None:
        self.sleep(min(self.base_delay_seconds * 2**attempt, 2.0))

    def put_object(self, key: str, data: bytes) -> bool:
        """One PutObject (botocore retries what is transient); False when it failed."""
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/x-ndjson"
            )
        except (ClientError, BotoCoreError) as error:
            log.warning("S3 put %s failed after botocore's retries: %s", key, error)
            return False
        return True

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> set[int]:
        """Send all messages; returns the indices that could not be sent."""
        failed: set[int] = set()
        for chunk in chunk_messages(messages):
            failed |= self._send_chunk(chunk, messages)
        return failed

    def _send_chunk(self, chunk: list[int], messages: Sequence[OutgoingMessage]) -> set[int]:
        pending = list(chunk)
        given_up: set[int] = set()  # sender faults: they do not heal on retry
        for attempt in range(self.attempts):
            entries = [
                {
                    "Id": str(index),
                    "MessageBody": messages[index].body,
                    "MessageAttributes": messages[index].attributes,
                }
                for index in pending
            ]
            try:
                response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as error:
                log.warning("SendMessageBatch failed after botocore's retries: %s", error)
                return given_up | set(pending)
            failures = response.get("Failed") or []
            for failure in failures:
                log.warning(
                    "SQS entry failed (attempt %d): %s %s",
                    attempt + 1,
                    failure.get("Code"),
                    failure.get("Message"),
                )
            given_up |= {int(f["Id"]) for f in failures if f.get("SenderFault")}
            pending = [int(f["Id"]) for f in failures if not f.get("SenderFault")]
            if not pending:
                return given_up
            if attempt + 1 < self.attempts:
                self._backoff(attempt)
        return given_up | set(pending)
