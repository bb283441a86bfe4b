"""The bounded event queue and the one background thread that drains it into blobs.

The queue keeps one buffer per device. A blob never mixes devices, because a blob has one
`sentAt` and one `context`, and skew correction (`received_at - (sentAt - originalTimestamp)`)
is only right when `sentAt` and `originalTimestamp` come from the same clock. Many devices share
one consumer thread and one sender, so a process simulating a hundred devices runs two threads,
and blobs of different devices ride in the same PutRecords call.

A device's buffer is cut into blobs when it holds `flush_at` events or `flush_bytes` bytes, when
its oldest event has waited `flush_interval` seconds, when `flush()` asks for the events queued
before it, when the queue is full, and on close. Once anything is due, buffers that would be due
within a quarter interval go along, so devices that started together keep sharing calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from analytics_pipeline.client.encoding import (
    blob_bytes,
    encode_blob,
    format_timestamp,
    gzip_overhead,
)

log = logging.getLogger(__name__)

MAX_COALESCE_SECONDS = 1.0


@dataclass(slots=True)
class PendingEvent:
    seq: int
    message_id: str | None
    data: bytes
    enqueued_at: float  # time.monotonic()


@dataclass(eq=False)
class DeviceBuffer:
    """What the queue knows about one device: where its blobs go, its clock, its waiting events."""

    partition_key: str
    context_json: bytes
    clock: Callable[[], datetime]
    events: deque[PendingEvent] = field(default_factory=deque)
    pending_bytes: int = 0


@dataclass(eq=False)
class OutgoingBlob:
    """Events of one device on their way to Kinesis; encoded afresh for each send attempt."""

    device: DeviceBuffer
    events: list[PendingEvent]
    compress: bool
    attempts: int = 0

    @property
    def partition_key(self) -> str:
        return self.device.partition_key

    @property
    def message_ids(self) -> list[str | None]:
        return [event.message_id for event in self.events]

    def encode(self) -> bytes:
        """The record data with `sentAt` read from the device clock now (Segment semantics)."""
        sent_at = format_timestamp(self.device.clock())
        return encode_blob(
            sent_at,
            self.device.context_json,
            [event.data for event in self.events],
            compress=self.compress,
        )


class QueueFullError(Exception):
    """The event was dropped because the queue already held `max_queue_size` events."""


class ClientClosedError(Exception):
    """The event was dropped because the client was already closed."""


class EventTooLargeError(Exception):
    """The event alone makes a blob over the Kinesis record limit; it can never be sent."""


class EventQueue:
    """Per-device buffers under one lock, with flush bookkeeping. Thread-safe."""

    def __init__(
        self,
        *,
        flush_at: int,
        flush_bytes: int,
        flush_interval: float,
        max_queue_size: int,
        max_record_bytes: int,
        compress: bool,
        block_when_full: bool,
    ) -> None:
        if flush_at < 1 or flush_bytes < 1 or max_queue_size < 1 or flush_interval <= 0:
            raise ValueError("flush_at, flush_bytes, max_queue_size and flush_interval must be > 0")
        self.flush_at = flush_at
        self.flush_bytes = flush_bytes
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.max_record_bytes = max_record_bytes
        self.compress = compress
        self.block_when_full = block_when_full
        self._coalesce = min(MAX_COALESCE_SECONDS, flush_interval / 4)
        self._lock = threading.Lock()
        self._consumer_wake = threading.Condition(self._lock)
        self._space_freed = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._devices: list[DeviceBuffer] = []
        self._size = 0
        self._seq = 0
        self._flush_upto = 0
        self._closing = False
        self._consumer_idle = False
        self._in_flight: dict[int, int] = {}  # id(blob) -> lowest seq in it

    # -- producers ------------------------------------------------------------------------------

    def add_device(self, device: DeviceBuffer) -> None:
        with self._lock:
            self._devices.append(device)

    def put(self, device: DeviceBuffer, data: bytes, message_id: str | None) -> Exception | None:
        """Queue one encoded event; returns why it was dropped, or None when it was queued."""
        now = time.monotonic()
        with self._lock:
            while self._size >= self.max_queue_size and not self._closing:
                if not self.block_when_full:
                    self._consumer_wake.notify()
                    return QueueFullError(f"queue holds {self._size} events")
                self._consumer_wake.notify()
                self._space_freed.wait()
            if self._closing:
                return ClientClosedError("the client is closed")
            self._seq += 1
            device.events.append(PendingEvent(self._seq, message_id, data, now))
            device.pending_bytes += len(data)
            self._size += 1
            if (
                self._consumer_idle
                or len(device.events) >= self.flush_at
                or device.pending_bytes >= self.flush_bytes
                or self._size >= self.max_queue_size
            ):
                self._consumer_wake.notify()
        return None

    def flush(self, timeout: float | None) -> bool:
        """Wait until every event queued before this call is sent or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._seq
            self._flush_upto = max(self._flush_upto, target)
            self._consumer_wake.notify()
            while self._lowest_unfinished_seq() <= target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    def close(self) -> bool:
        """Stop accepting events and let the consumer drain; False if already closing."""
        with self._lock:
            if self._closing:
                return False
            self._closing = True
            self._consumer_wake.notify_all()
            self._space_freed.notify_all()
            return True

    @property
    def size(self) -> int:
        return self._size

    # -- the consumer ---------------------------------------------------------------------------

    def take(self) -> tuple[list[OutgoingBlob], list[tuple[OutgoingBlob, Exception]]] | None:
        """Block until blobs are due; returns them and the blobs that can never be sent.

        Returns None once the queue is closed and empty.
        """
        with self._lock:
            while True:
                now = time.monotonic()
                blobs, unsendable = self._cut_due(now)
                if blobs or unsendable:
                    for blob in [*blobs, *(blob for blob, _ in unsendable)]:
                        self._in_flight[id(blob)] = blob.events[0].seq
                    self._space_freed.notify_all()
                    return blobs, unsendable
                if self._closing and self._size == 0:
                    return None
                heads = [device.events[0].enqueued_at for device in self._devices if device.events]
                self._consumer_idle = not heads
                timeout = min(heads) + self.flush_interval - now if heads else None
                self._consumer_wake.wait(timeout)
                self._consumer_idle = False

    def finished(self, blobs: list[OutgoingBlob]) -> None:
        """The blobs were sent or given up on: `flush()` callers may stop waiting for them."""
        with self._lock:
            for blob in blobs:
                self._in_flight.pop(id(blob), None)
            self._progress.notify_all()

    def _lowest_unfinished_seq(self) -> int:
        lowest = [device.events[0].seq for device in self._devices if device.events]
        lowest.extend(self._in_flight.values())
        return min(lowest, default=self._seq + 1)

    def _due(self, device: DeviceBuffer, now: float, slack: float) -> bool:
        if not device.events:
            return False
        head = device.events[0]
        return (
            self._closing
            or len(device.events) >= self.flush_at
            or device.pending_bytes >= self.flush_bytes
            or head.seq <= self._flush_upto
            or self._size >= self.max_queue_size
            or head.enqueued_at + self.flush_interval <= now + slack
        )

    def _cut_due(
        self, now: float
    ) -> tuple[list[OutgoingBlob], list[tuple[OutgoingBlob, Exception]]]:
        blobs: list[OutgoingBlob] = []
        unsendable: list[tuple[OutgoingBlob, Exception]] = []
        for slack in (0.0, self._coalesce):
            for device in self._devices:
                while self._due(device, now, slack):
                    events, error = self._cut_one(device)
                    blob = OutgoingBlob(device, events, self.compress)
                    if error is None:
                        blobs.append(blob)
                    else:
                        unsendable.append((blob, error))
            if not blobs and not unsendable:
                break
        return blobs, unsendable

    def _cut_one(self, device: DeviceBuffer) -> tuple[list[PendingEvent], Exception | None]:
        """Pop the longest run of head events that fits one blob under the record limit.

        Blobs are cut by their uncompressed size (plus gzip's worst-case growth when compressing),
        so a blob is under the limit whether or not it compresses well.
        """
        limit = self.max_record_bytes - len(device.partition_key.encode())
        if self.compress:
            limit -= gzip_overhead(limit)
        limit = min(limit, max(self.flush_bytes, 1))
        events: list[PendingEvent] = []
        event_bytes = 0
        queue = device.events
        while queue and len(events) < self.flush_at:
            candidate = queue[0]
            size = blob_bytes(
                device.context_json, event_bytes + len(candidate.data), len(events) + 1
            )
            if events and size > limit:
                break
            queue.popleft()
            events.append(candidate)
            event_bytes += len(candidate.data)
            device.pending_bytes -= len(candidate.data)
            self._size -= 1
            if size > limit:  # a single event that no blob can carry
                hard_limit = self.max_record_bytes - len(device.partition_key.encode())
                if self.compress:
                    hard_limit -= gzip_overhead(hard_limit)
                if size > hard_limit:
                    return events, EventTooLargeError(
                        f"a blob with this event alone is {size} bytes; "
                        f"the Kinesis record limit is {self.max_record_bytes}"
                    )
                break
        return events, None


class Consumer(threading.Thread):
    """Drains the queue: takes due blobs, hands them to the sender, reports the outcome."""

    def __init__(
        self,
        queue: EventQueue,
        send: Callable[[list[OutgoingBlob]], list[tuple[OutgoingBlob, Exception]]],
        report: Callable[[list[OutgoingBlob], list[tuple[OutgoingBlob, Exception]]], None],
    ) -> None:
        super().__init__(name="analytics-pipeline-consumer", daemon=True)
        self._queue = queue
        self._send = send
        self._report = report

    def run(self) -> None:
        while (work := self._queue.take()) is not None:
            blobs, failures = work
            try:
                if blobs:
                    try:
                        failures = failures + self._send(blobs)
                    except Exception as error:  # never let one bad batch kill the thread
                        log.exception("sending %d blobs failed unexpectedly", len(blobs))
                        failures = failures + [(blob, error) for blob in blobs]
                failed = {id(blob) for blob, _ in failures}
                self._report([blob for blob in blobs if id(blob) not in failed], failures)
            except Exception:
                log.exception("reporting a send outcome failed")
            finally:
                self._queue.finished([*blobs, *(blob for blob, _ in work[1])])
