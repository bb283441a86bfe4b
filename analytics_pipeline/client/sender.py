"""The one place that talks to Kinesis: PutRecords with per-record retries.

Retries are ours, not botocore's: a PutRecords call can succeed while some of its records fail
(`FailedRecordCount`, a per-record `ErrorCode`), and only those records are sent again. Each
attempt re-encodes the blob so `sentAt` is the time of that attempt. Between attempts we sleep
with exponential backoff and full jitter (`uniform(0, min(cap, base * 2**attempt))`), for at most
`max_retries` retries; a blob still failing after that, or failing with an error that retrying
cannot fix (a missing stream, bad credentials), is given up on and reported to the caller.

Ordering: blobs of one device share a partition key and so a shard, and reach it in order as long
as nothing is retried; a retried blob can land after a later one. The pipeline orders by event
timestamps, never by arrival.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import (
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from analytics_pipeline.chunking import chunked

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024

RETRYABLE_RECORD_ERRORS = frozenset(
    {"ProvisionedThroughputExceededException", "InternalFailure", "KMSThrottlingException"}
)
RETRYABLE_CALL_ERRORS = RETRYABLE_RECORD_ERRORS | {
    "ThrottlingException",
    "LimitExceededException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalServerError",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
}


class Sendable(Protocol):
    """One Kinesis record to send: the SDK's blob of one device, or a collector request's."""

    attempts: int

    @property
    def partition_key(self) -> str: ...

    def encode(self) -> bytes:
        """The record data for this attempt."""
        ...


class SendError(Exception):
    """A blob was given up on; `code` is the last Kinesis error code (or the exception's name)."""

    def __init__(self, code: str, message: str, attempts: int) -> None:
        super().__init__(f"{code}: {message} (after {attempts} attempts)")
        self.code = code
        self.attempts = attempts


@dataclass
class _Attempt:
    blob: Sendable
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + len(self.blob.partition_key.encode())


@dataclass
class KinesisSender:
    """PutRecords for blobs; `on_put(records, failed_records)` hears of every call (counters)."""

    kinesis: Any
    stream_name: str
    max_retries: int = 8
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    on_put: Callable[[int, int], None] | None = None
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def backoff(self, retry: int) -> float:
        """Full jitter (AWS architecture blog): spreads retrying clients instead of syncing them."""
        return self._random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**retry))

    def send(self, blobs: list[Sendable]) -> list[tuple[Sendable, Exception]]:
        """Send the blobs; returns the ones given up on, with why. Never raises."""
        pending = list(blobs)
        given_up: list[tuple[Sendable, Exception]] = []
        last_error: dict[int, tuple[str, str]] = {}
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self.backoff(attempt - 1))
            attempts = []
            for blob in pending:
                blob.attempts += 1
                attempts.append(_Attempt(blob, blob.encode()))
            retry: list[Sendable] = []
            # Calls of at most 500 records and 5 MiB (data plus partition keys).
            for chunk in chunked(
                attempts, MAX_RECORDS_PER_CALL, MAX_BYTES_PER_CALL, weight=lambda a: a.size
            ):
                for attempt_, outcome in zip(chunk, self._put(chunk), strict=True):
                    if outcome is None:
                        continue
                    retryable, code, message = outcome
                    if retryable:
                        retry.append(attempt_.blob)
                        last_error[id(attempt_.blob)] = (code, message)
                    else:
                        given_up.append((attempt_.blob, SendError(code, message, attempt + 1)))
            pending = retry
            if not pending:
                break
            log.info("retrying %d of %d Kinesis records", len(pending), len(attempts))
        for blob in pending:
            code, message = last_error[id(blob)]
            given_up.append((blob, SendError(code, message, blob.attempts)))
        return given_up

    def _put(self, chunk: list[_Attempt]) -> list[tuple[bool, str, str] | None]:
        """One PutRecords call; per record None (stored) or (retryable, code, message)."""
        records = [{"Data": item.data, "PartitionKey": item.blob.partition_key} for item in chunk]
        try:
            response = self.kinesis.put_records(StreamName=self.stream_name, Records=records)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "ClientError")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            retryable = code in RETRYABLE_CALL_ERRORS or status >= 500
            self._count(len(chunk), len(chunk))
            return [(retryable, code, str(error))] * len(chunk)
        except (BotoConnectionError, HTTPClientError) as error:
            self._count(len(chunk), len(chunk))
            return [(True, type(error).__name__, str(error))] * len(chunk)
        except Exception as error:  # parameter validation and the like: retrying cannot help
            self._count(len(chunk), len(chunk))
            return [(False, type(error).__name__, str(error))] * len(chunk)
        results = response.get("Records", [])
        outcomes: list[tuple[bool, str, str] | None] = []
        for index in range(len(chunk)):
            result = results[index] if index < len(results) else {"ErrorCode": "MissingResult"}
            code = result.get("ErrorCode")
            if code:
                retryable = code in RETRYABLE_RECORD_ERRORS or code == "MissingResult"
                outcomes.append((retryable, code, result.get("ErrorMessage", "")))
            else:
                outcomes.append(None)
        self._count(len(chunk), sum(outcome is not None for outcome in outcomes))
        return outcomes

    def _count(self, records: int, failed: int) -> None:
        if self.on_put is not None:
            self.on_put(records, failed)
