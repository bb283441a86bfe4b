"""The public SDK: a Segment-style event API that batches events into blobs on Kinesis.

It behaves as a mobile SDK does: every call returns at once (the event is only queued), a
background thread sends blobs when a threshold is reached, on a timer, on `flush()`, and on
`close()` (the app going to the background). The client knows the wire format, not the server's
rules: apart from what the transport cannot carry (a blob over the Kinesis record limit) it sends
whatever it is given, so it can also produce the invalid events the pipeline must quarantine
(`enqueue_raw`).

Loss is never silent. An event is either sent, or counted in `stats` as `dropped` (refused when
queued: queue full, client closed, not JSON-encodable) or `failed` (given up on after retries, or
too large for any record), and in both cases `on_error(error, message_ids)` is called: on the
caller's thread for drops, on the consumer thread for failures.

When the queue is full (`max_queue_size` events waiting, across all devices of the client), the
default `on_full="drop"` drops the NEW event, as analytics-python does, so the app never stalls on
analytics; `on_full="block"` makes the call wait for room instead (back-pressure, used by the
traffic simulator so that a fast run loses nothing).
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from botocore.config import Config

from analytics_pipeline import aws
from analytics_pipeline.client.encoding import encode_json, format_timestamp, utc_now
from analytics_pipeline.client.event_queue import (
    Consumer,
    DeviceBuffer,
    EventQueue,
    OutgoingBlob,
)
from analytics_pipeline.client.sender import KinesisSender
from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)

LIBRARY_NAME = "analytics-pipeline-python"
try:
    LIBRARY_VERSION = version("analytics-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    LIBRARY_VERSION = "0.0.0"

KINESIS_RECORD_LIMIT = 1_048_576

# The SDK retries failed records itself; botocore retrying whole calls underneath would multiply
# the attempts and hide per-record failures.
_KINESIS_CONFIG = Config(
    retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30, max_pool_connections=4
)

ErrorCallback = Callable[[Exception, list[str | None]], None]
Clock = Callable[[], datetime]


def kinesis_client(settings: Settings | None = None) -> Any:
    """A boto3 Kinesis client for the SDK: endpoint from settings, botocore retries off."""
    return aws.client("kinesis", settings, config=_KINESIS_CONFIG)


@dataclass(frozen=True)
class ClientStats:
    """Counters since the client was created. enqueued = sent + failed + queued + in flight."""

    enqueued: int  # events accepted into the queue
    sent: int  # events in blobs Kinesis stored
    dropped: int  # events refused when queued: queue full, client closed, not encodable
    failed: int  # events in blobs given up on: retries exhausted, fatal error, record too large
    queued: int  # events waiting in the queue now
    blobs_sent: int
    blobs_failed: int
    put_records_calls: int
    record_errors: int  # records a PutRecords call did not store (then retried or given up)


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enqueued = 0
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.blobs_sent = 0
        self.blobs_failed = 0
        self.put_records_calls = 0
        self.record_errors = 0


class _DeviceState:
    """One device: its identity (mutated by identify/alias/reset) and its buffer in the queue."""

    def __init__(self, buffer: DeviceBuffer, anonymous_id: str) -> None:
        self.buffer = buffer
        self.anonymous_id = anonymous_id
        self.user_id: str | None = None


class _EventMethods:
    """The Segment call API, shared by `Client` (its own device) and `Device` handles."""

    _client: Client
    _device: _DeviceState

    @property
    def anonymous_id(self) -> str:
        return self._device.anonymous_id

    @property
    def user_id(self) -> str | None:
        return self._device.user_id

    def track(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue a track event; returns its messageId."""
        fields = {"event": event, "properties": properties or {}}
        return self._record("track", fields, user_id, anonymous_id, context, timestamp, message_id)

    def screen(
        self,
        name: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        fields = {"name": name, "properties": properties or {}}
        return self._record("screen", fields, user_id, anonymous_id, context, timestamp, message_id)

    def page(
        self,
        name: str,
        properties: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        fields = {"name": name, "properties": properties or {}}
        return self._record("page", fields, user_id, anonymous_id, context, timestamp, message_id)

    def identify(
        self,
        user_id: str | None,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue an identify; like a mobile SDK, later events of this device carry the userId."""
        if user_id is not None:
            self._device.user_id = user_id
        fields = {"traits": traits or {}}
        return self._record(
            "identify", fields, user_id, anonymous_id, context, timestamp, message_id
        )

    def group(
        self,
        group_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        fields = {"groupId": group_id, "traits": traits or {}}
        return self._record("group", fields, user_id, anonymous_id, context, timestamp, message_id)

    def alias(
        self,
        user_id: str,
        previous_id: str,
        *,
        anonymous_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Queue an alias; the device takes `user_id` as its current user (mobile behaviour)."""
        self._device.user_id = user_id
        fields = {"previousId": previous_id}
        return self._record("alias", fields, user_id, anonymous_id, context, timestamp, message_id)

    def reset(self) -> None:
        """Forget the user and start a new anonymous id (logout); the partition key stays."""
        self._device.user_id = None
        self._device.anonymous_id = str(uuid.uuid4())

    def enqueue_raw(self, message: Any) -> str | None:
        """Queue `message` exactly as given (no messageId, identity or timestamp added).

        For tests and the simulator: it is how invalid events reach the pipeline. Returns the
        message's `messageId` when it has a string one.
        """
        message_id = message.get("messageId") if isinstance(message, Mapping) else None
        message_id = message_id if isinstance(message_id, str) else None
        self._client._submit(self._device, message, message_id)
        return message_id

    def _record(
        self,
        kind: str,
        fields: dict[str, Any],
        user_id: str | None,
        anonymous_id: str | None,
        context: Mapping[str, Any] | None,
        timestamp: datetime | str | None,
        message_id: str | None,
    ) -> str:
        device = self._device
        message_id = message_id or str(uuid.uuid4())
        message: dict[str, Any] = {"type": kind, "messageId": message_id, **fields}
        user_id = user_id if user_id is not None else device.user_id
        if user_id is not None:
            message["userId"] = user_id
        message["anonymousId"] = anonymous_id if anonymous_id is not None else device.anonymous_id
        message["originalTimestamp"] = format_timestamp(device.buffer.clock())
        if timestamp is not None:
            message["timestamp"] = (
                format_timestamp(timestamp) if isinstance(timestamp, datetime) else timestamp
            )
        if context:
            message["context"] = context
        self._client._submit(device, message, message_id)
        return message_id


class Device(_EventMethods):
    """Another device sending through the same client (shared queue, thread and connection).

    Has its own anonymous id, clock, blob context and partition key, and its own blobs.
    """

    def __init__(self, client: Client, device: _DeviceState) -> None:
        self._client = client
        self._device = device

    @property
    def partition_key(self) -> str:
        return self._device.buffer.partition_key


class Client(_EventMethods):
    """One SDK instance. Its own calls act for its own device; `device()` adds more devices.

    `on_error(error, message_ids)` hears about every lost event (see the module docstring).
    `clock` stamps originalTimestamp and sentAt (a device's clock may be wrong; that is what
    skew correction is for). `max_record_bytes` is the Kinesis record limit blobs are cut under.
    """

    def __init__(
        self,
        stream_name: str,
        *,
        kinesis: Any = None,
        context: Mapping[str, Any] | None = None,
        anonymous_id: str | None = None,
        clock: Clock = utc_now,
        flush_at: int = 100,
        flush_bytes: int = 500_000,
        flush_interval: float = 5.0,
        max_queue_size: int = 10_000,
        gzip: bool = True,
        max_retries: int = 8,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        on_full: Literal["drop", "block"] = "drop",
        on_error: ErrorCallback | None = None,
        max_record_bytes: int = KINESIS_RECORD_LIMIT,
        register_atexit: bool = False,
    ) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', not {on_full!r}")
        if kinesis is None:
            kinesis = kinesis_client()
        self.stream_name = stream_name
        self._context = {"library": {"name": LIBRARY_NAME, "version": LIBRARY_VERSION}}
        self._context.update(context or {})
        self._on_error = on_error
        self._counters = _Counters()
        self._queue = EventQueue(
            flush_at=flush_at,
            flush_bytes=flush_bytes,
            flush_interval=flush_interval,
            max_queue_size=max_queue_size,
            max_record_bytes=max_record_bytes,
            compress=gzip,
            block_when_full=on_full == "block",
        )
        self._sender = KinesisSender(
            kinesis,
            stream_name,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            on_put=self._count_put,
        )
        self._client = self
        self._device = self._new_device(anonymous_id, None, clock, None)
        self._consumer = Consumer(self._queue, self._sender.send, self._report)
        self._consumer.start()
        self._atexit = register_atexit
        if register_atexit:
            atexit.register(self.close)

    # -- devices ---------------------------------------------------------------------------------

    def device(
        self,
        anonymous_id: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        partition_key: str | None = None,
    ) -> Device:
        """A device sharing this client's thread and connection (used to simulate many devices).

        `context` is merged over the client's blob context; `partition_key` defaults to the
        anonymous id, so each device's blobs stay on one shard.
        """
        return Device(self, self._new_device(anonymous_id, context, clock, partition_key))

    def _new_device(
        self,
        anonymous_id: str | None,
        context: Mapping[str, Any] | None,
        clock: Clock | None,
        partition_key: str | None,
    ) -> _DeviceState:
        anonymous_id = anonymous_id or str(uuid.uuid4())
        blob_context = {**self._context, **(context or {})}
        buffer = DeviceBuffer(
            partition_key=(partition_key or anonymous_id)[:256],
            context_json=encode_json(blob_context),
            clock=clock or self._device.buffer.clock,
        )
        self._queue.add_device(buffer)
        return _DeviceState(buffer, anonymous_id)

    # -- flushing and lifecycle ------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued before this call; True once all of it was sent or given up on."""
        if not self._consumer.is_alive():
            return self._queue.size == 0
        return self._queue.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread; later calls drop their events. Safe to call repeatedly.

        Returns False when the thread did not finish within `timeout` (it keeps draining).
        """
        self._queue.close()
        if self._atexit:
            self._atexit = False
            atexit.unregister(self.close)
        if self._consumer is not threading.current_thread():
            self._consumer.join(timeout)
        return not self._consumer.is_alive()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stats(self) -> ClientStats:
        counters = self._counters
        with counters.lock:
            return ClientStats(
                enqueued=counters.enqueued,
                sent=counters.sent,
                dropped=counters.dropped,
                failed=counters.failed,
                queued=self._queue.size,
                blobs_sent=counters.blobs_sent,
                blobs_failed=counters.blobs_failed,
                put_records_calls=counters.put_records_calls,
                record_errors=counters.record_errors,
            )

    # -- internals -------------------------------------------------------------------------------

    def _submit(self, device: _DeviceState, message: Any, message_id: str | None) -> None:
        try:
            data = encode_json(message)
        except Exception as error:  # e.g. a circular reference or a non-string dict key
            self._drop(error, message_id)
            return
        error = self._queue.put(device.buffer, data, message_id)
        if error is not None:
            self._drop(error, message_id)
            return
        with self._counters.lock:
            self._counters.enqueued += 1

    def _drop(self, error: Exception, message_id: str | None) -> None:
        with self._counters.lock:
            self._counters.dropped += 1
            dropped = self._counters.dropped
        if dropped == 1 or dropped % 1000 == 0:
            log.warning("analytics event dropped (%d so far): %s", dropped, error)
        self._call_on_error(error, [message_id])

    def _count_put(self, records: int, failed: int) -> None:
        with self._counters.lock:
            self._counters.put_records_calls += 1
            self._counters.record_errors += failed

    def _report(
        self, sent: list[OutgoingBlob], failed: list[tuple[OutgoingBlob, Exception]]
    ) -> None:
        with self._counters.lock:
            self._counters.blobs_sent += len(sent)
            self._counters.sent += sum(len(blob.events) for blob in sent)
            self._counters.blobs_failed += len(failed)
            self._counters.failed += sum(len(blob.events) for blob, _ in failed)
        for blob, error in failed:
            log.error("gave up on a blob of %d events: %s", len(blob.events), error)
            self._call_on_error(error, blob.message_ids)

    def _call_on_error(self, error: Exception, message_ids: list[str | None]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(error, message_ids)
        except Exception:
            log.exception("on_error callback raised")
