"""The handler's writes to AWS: batch objects to S3, batch messages to SQS.

SendMessageBatch can succeed for some entries and fail for others in one answer; only the failed
entries are sent again, a few times with backoff, and whatever still fails is reported to the
caller (which turns it into a Lambda batch item failure rather than losing it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
    chunks: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, message in enumerate(messages):
        if current and (len(current) >= max_entries or current_bytes + message.size > max_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += message.size
    if current:
        chunks.append(current)
    return chunks


class SqsS3Sink:
    """Writes through boto3 clients (real or emulated); retries transient failures a few times."""

    def __init__(
        self,
        sqs: Any,
        s3: Any,
        queue_url: str,
        bucket: str,
        attempts: int = 4,
        base_delay_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sqs = sqs
        self.s3 = s3
        self.queue_url = queue_url
        self.bucket = bucket
        self.attempts = attempts
        self.base_delay_seconds = base_delay_seconds
        self.sleep = sleep

    def _backoff(self, attempt: int) -> None:
        self.sleep(min(self.base_delay_seconds * 2**attempt, 2.0))

    def put_object(self, key: str, data: bytes) -> bool:
        for attempt in range(self.attempts):
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType="application/x-ndjson"
                )
                return True
            except (ClientError, BotoCoreError) as error:
                log.warning("S3 put %s failed (attempt %d): %s", key, attempt + 1, error)
                if attempt + 1 < self.attempts:
                    self._backoff(attempt)
        return False

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
                log.warning("SendMessageBatch failed (attempt %d): %s", attempt + 1, error)
            else:
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
