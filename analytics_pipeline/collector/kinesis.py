"""The one place the collector writes to Kinesis: a request waits until its record is stored.

Requests hand their record to `RecordWriter.put` and await it. A few writer threads take what
has queued up (at most 500 records / 5 MiB, one PutRecords call) and send it through the SDK's
`KinesisSender` without retries of its own; each request learns the outcome of its own record
from the per-record results. Under load many requests share one call (group commit): botocore
spends ~1.5 ms of CPU per call, which at one call per request would be most of the collector's
time; at rest a record goes out at once, alone.

Failures are answered, not retried here: a throttled record (`ProvisionedThroughputExceeded`)
becomes 429 and anything else (Kinesis unreachable, 5xx, timeouts) 503, both with Retry-After,
and the SDK's own retry sends the request again. botocore gets one quick retry of a failed call
and short timeouts, so an answer comes well inside the SDKs' request timeouts (10-15 s).
A record whose call timed out may still have been stored: the SDK's resend then stores it
twice, and the loader's messageId dedupe keeps one copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config

from analytics_pipeline import aws
from analytics_pipeline.client.sender import (
    MAX_BYTES_PER_CALL,
    MAX_RECORDS_PER_CALL,
    KinesisSender,
    SendError,
)
from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)

WRITER_THREADS = 2  # calls in flight at once: one slow call must not hold up the others
BOTO_CONFIG = Config(
    retries={"total_max_attempts": 2, "mode": "standard"},  # one retry
    connect_timeout=2,
    read_timeout=3,
    max_pool_connections=WRITER_THREADS,
)
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
    }
)
THROTTLED_RETRY_AFTER_SECONDS = 1  # Kinesis limits are per second
UNAVAILABLE_RETRY_AFTER_SECONDS = 2


class KinesisRefused(Exception):
    """The request's record was not stored; `throttled` picks 429 over 503."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.throttled = code in THROTTLE_CODES

    @property
    def retry_after_seconds(self) -> int:
        return THROTTLED_RETRY_AFTER_SECONDS if self.throttled else UNAVAILABLE_RETRY_AFTER_SECONDS


@dataclass(eq=False)
class _Record:
    """One request's blob on its way; satisfies `client.sender.Sendable`."""

    data: bytes
    partition_key: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    attempts: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.data) + len(self.partition_key)

    def encode(self) -> bytes:
        return self.data


class RecordWriter:
    """PutRecords for concurrent requests, from `WRITER_THREADS` threads sharing one queue."""

    def __init__(self, kinesis: Any, stream_name: str, threads: int = WRITER_THREADS) -> None:
        self._sender = KinesisSender(kinesis, stream_name, max_retries=0)
        self._queue: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"kinesis-writer-{n}", daemon=True)
            for n in range(threads)
        ]
        self.calls = 0  # PutRecords calls made, and the records they carried (for /health)
        self.records = 0
        self._counting = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordWriter:
        return cls(aws.client("kinesis", settings, config=BOTO_CONFIG), settings.stream_name)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    async def put(self, data: bytes) -> None:
        """Store one record; raises `KinesisRefused` when Kinesis did not take it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # A random key spreads requests over the shards; order across requests is not kept
        # anywhere in the pipeline (events are ordered by their timestamps).
        self._queue.put(_Record(data, os.urandom(16).hex(), loop, future))
        await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            records = [first]
            size = first.size
            stop = False
            while len(records) < MAX_RECORDS_PER_CALL:
                try:
                    record = self._queue.get_nowait()
                except queue.Empty:
                    break
                if record is None:
                    stop = True
                    break
                if size + record.size > MAX_BYTES_PER_CALL:
                    self._queue.put(record)  # the next call takes it
                    break
                records.append(record)
                size += record.size
            self._send(records)
            if stop:
                return

    def _send(self, records: list[_Record]) -> None:
        with self._counting:
            self.calls += 1
            self.records += len(records)
        try:
            failed = self._sender.send(records)  # type: ignore[arg-type]
        except Exception as error:  # never leave a request waiting
            log.exception("PutRecords failed unexpectedly")
            failed = [(record, error) for record in records]
        errors: dict[int, BaseException] = {}
        for record, error in failed:
            code = error.code if isinstance(error, SendError) else type(error).__name__
            errors[id(record)] = KinesisRefused(code, str(error))
        if failed:
            log.warning("Kinesis refused %d of %d records", len(failed), len(records))
        outcomes: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Any]]] = {}
        for record in records:
            outcomes.setdefault(record.loop, []).append((record.future, errors.get(id(record))))
        for loop, settled in outcomes.items():  # one wake-up of each event loop per call
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for future, error in outcomes:
        if future.done():  # the request was cancelled (its client went away)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
