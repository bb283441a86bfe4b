"""Client behaviour against an in-process Kinesis double: thresholds, retries, limits, loss."""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from analytics_pipeline.client import (
    Client,
    ClientClosedError,
    EventTooLargeError,
    QueueFullError,
    SendError,
)
from analytics_pipeline_testkit.doubles import (
    THROTTLED,
    KinesisDouble,
    decode_blob,
    throttling_error,
)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
QUIET = 60.0  # a flush interval long enough that the timer never fires during a test


class StepClock:
    """A device clock that moves one minute forward every time it is read."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(minutes=1)
            return self.now


class Errors:
    """An on_error callback that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Exception, list[str | None]]] = []

    def __call__(self, error: Exception, message_ids: list[str | None]) -> None:
        self.calls.append((error, message_ids))


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(kinesis: Any, **options: Any) -> Client:
        options.setdefault("flush_interval", QUIET)
        options.setdefault("backoff_base", 0.001)
        client = Client("events", kinesis=kinesis, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=5)


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def noise(size: int) -> str:
    """Text that gzip cannot shrink much, so compressed size tracks raw size."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


# -- the event calls ------------------------------------------------------------------------------


def test_calls_produce_segment_events_in_one_blob(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis, context={"app": {"name": "demo"}})
    track_id = client.track("Video Recorded", {"duration_ms": 5400, "tags": ["a"]})
    screen_id = client.screen("Feed")
    identify_id = client.identify("u-9", {"plan": "pro"})
    after_identify = client.track("Video Viewed", context={"locale": "de-DE"})
    group_id = client.group("g-1", {"seats": 3})
    alias_id = client.alias("u-10", "u-9")
    page_id = client.page("Pricing", {"path": "/pricing"})
    assert client.flush(timeout=5)

    (blob,) = kinesis.stored_blobs()
    events = blob["batch"]
    assert [e["messageId"] for e in events] == [
        track_id,
        screen_id,
        identify_id,
        after_identify,
        group_id,
        alias_id,
        page_id,
    ]
    assert [e["type"] for e in events] == [
        "track",
        "screen",
        "identify",
        "track",
        "group",
        "alias",
        "page",
    ]
    assert len(set(e["messageId"] for e in events)) == 7
    assert events[0]["event"] == "Video Recorded"
    assert events[0]["properties"] == {"duration_ms": 5400, "tags": ["a"]}
    assert "userId" not in events[0]  # anonymous until identify
    assert events[1]["name"] == "Feed"
    assert events[2]["userId"] == "u-9" and events[2]["traits"] == {"plan": "pro"}
    assert events[3]["userId"] == "u-9"  # the device remembers who it is, like a mobile SDK
    assert events[3]["context"] == {"locale": "de-DE"}
    assert events[4]["groupId"] == "g-1"
    assert events[5]["userId"] == "u-10" and events[5]["previousId"] == "u-9"
    assert {e["anonymousId"] for e in events} == {client.anonymous_id}
    assert all(TIMESTAMP.match(e["originalTimestamp"]) for e in events)
    assert TIMESTAMP.match(blob["sentAt"])
    assert blob["context"]["app"] == {"name": "demo"}
    assert blob["context"]["library"]["name"] == "analytics-pipeline-python"
    assert kinesis.calls[0].records[0]["PartitionKey"] == client.anonymous_id


def test_explicit_timestamp_and_message_id_are_kept(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis)
    when = datetime(2026, 11, 29, 13, 0, 5, 120_999, tzinfo=UTC)
    returned = client.track("Opened", timestamp=when, message_id="my-id", user_id="u-1")
    assert returned == "my-id"
    client.flush(timeout=5)
    (event,) = kinesis.stored_events()
    assert event["timestamp"] == "2026-11-29T13:00:05.120Z"
    assert event["messageId"] == "my-id" and event["userId"] == "u-1"


def test_enqueue_raw_sends_invalid_events_unchanged(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis)
    broken = {"type": "purchase", "messageId": "x" * 300, "userId": 12}
    assert client.enqueue_raw(broken) == "x" * 300
    assert client.enqueue_raw(["not", "an", "object"]) is None
    client.flush(timeout=5)
    assert kinesis.stored_events() == [broken, ["not", "an", "object"]]


def test_properties_are_captured_at_call_time(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis)
    properties = {"step": 1}
    client.track("Step", properties)
    properties["step"] = 2
    client.flush(timeout=5)
    assert kinesis.stored_events()[0]["properties"] == {"step": 1}


# -- when blobs are sent --------------------------------------------------------------------------


def test_flush_at_count(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis, flush_at=10)
    for index in range(14):
        client.track("Tap", {"index": index})
    assert wait_for(lambda: len(kinesis.stored_records()) == 1)
    time.sleep(0.1)  # the 4 left over are below every threshold and must wait
    assert [len(blob["batch"]) for blob in kinesis.stored_blobs()] == [10]
    assert client.stats.queued == 4


def test_flush_at_bytes(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis, flush_at=1000, flush_bytes=2000, gzip=False)
    for _ in range(4):
        client.track("Upload", {"payload": "p" * 500})  # about 650 bytes of JSON each
    assert wait_for(lambda: len(kinesis.stored_records()) == 1)
    (record,) = kinesis.stored_records()
    assert len(record["Data"]) <= 2000
    assert len(decode_blob(record["Data"])["batch"]) == 2
    assert client.stats.queued == 2


def test_flush_on_timer(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis, flush_interval=0.2)
    started = time.monotonic()
    client.track("Tap")
    client.track("Tap")
    assert wait_for(lambda: len(kinesis.stored_records()) == 1)
    assert 0.15 <= time.monotonic() - started < 1.5
    assert len(kinesis.stored_events()) == 2


def test_flush_blocks_until_sent(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis)
    ids = {client.track("Tap") for _ in range(3)}
    assert kinesis.calls == []
    assert client.flush(timeout=5) is True
    assert {event["messageId"] for event in kinesis.stored_events()} == ids
    assert client.stats.sent == 3 and client.stats.queued == 0


def test_flush_times_out_while_kinesis_hangs(make_client: Callable[..., Client]) -> None:
    gate = threading.Event()
    client = make_client(KinesisDouble(gate=gate))
    client.track("Tap")
    assert client.flush(timeout=0.1) is False
    gate.set()
    assert client.flush(timeout=5) is True


def test_close_flushes_stops_and_is_idempotent(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    errors = Errors()
    client = make_client(kinesis, on_error=errors)
    client.track("Backgrounded")
    assert client.close(timeout=5) is True
    assert client.close(timeout=5) is True
    assert len(kinesis.stored_events()) == 1
    late = client.track("After close")
    assert client.stats.dropped == 1
    assert len(errors.calls) == 1
    error, ids = errors.calls[0]
    assert isinstance(error, ClientClosedError) and ids == [late]
    assert client.flush(timeout=1) is True
    assert len(kinesis.calls) == 1


def test_close_stops_the_consumer_thread(make_client: Callable[..., Client]) -> None:
    before = {t.ident for t in threading.enumerate()}
    client = make_client(KinesisDouble())
    (consumer,) = [t for t in threading.enumerate() if t.ident not in before]
    client.close(timeout=5)
    assert not consumer.is_alive()


@pytest.mark.parametrize("compress", [True, False])
def test_gzip_or_plain_json(make_client: Callable[..., Client], compress: bool) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis, gzip=compress)
    message_id = client.track("Tap", {"text": "hello " * 100})
    client.flush(timeout=5)
    data = kinesis.stored_records()[0]["Data"]
    assert (data[:2] == b"\x1f\x8b") is compress
    if not compress:
        assert data.startswith(b'{"sentAt":"')
    blob = decode_blob(data)
    assert blob["batch"][0]["messageId"] == message_id
    assert blob["batch"][0]["properties"] == {"text": "hello " * 100}


# -- retries --------------------------------------------------------------------------------------


def test_only_failed_records_are_retried_with_fresh_sent_at(
    make_client: Callable[..., Client],
) -> None:
    kinesis = KinesisDouble({1})
    client = make_client(kinesis)
    clock = StepClock(datetime(2026, 11, 29, 12, tzinfo=UTC))
    devices = [client.device(), client.device(clock=clock), client.device()]
    sent_ids = [device.track("Tap") for device in devices]
    client.flush(timeout=5)

    first, second = kinesis.calls
    assert len(first.records) == 3 and first.failed_indexes == {1}
    (retried,) = second.records
    failed_attempt = first.records[1]
    assert retried["PartitionKey"] == failed_attempt["PartitionKey"] == devices[1].partition_key
    before, after = decode_blob(failed_attempt["Data"]), decode_blob(retried["Data"])
    assert before["batch"] == after["batch"]  # same events, same messageIds, same timestamps
    assert after["sentAt"] > before["sentAt"]  # re-stamped for the new attempt
    assert sorted(e["messageId"] for e in kinesis.stored_events()) == sorted(sent_ids)
    stats = client.stats
    assert (stats.sent, stats.failed, stats.record_errors, stats.put_records_calls) == (3, 0, 1, 2)


def test_sent_at_is_stamped_per_attempt_not_at_enqueue(
    make_client: Callable[..., Client],
) -> None:
    clock = StepClock(datetime(2026, 11, 29, 12, tzinfo=UTC))
    kinesis = KinesisDouble(throttling_error(), throttling_error())
    client = make_client(kinesis, clock=clock)
    client.track("Tap")
    client.flush(timeout=5)
    blobs = [decode_blob(call.records[0]["Data"]) for call in kinesis.calls]
    assert len(blobs) == 3
    (original,) = {blob["batch"][0]["originalTimestamp"] for blob in blobs}
    assert {blob["batch"][0]["messageId"] for blob in blobs} == {blobs[0]["batch"][0]["messageId"]}
    assert original < blobs[0]["sentAt"] < blobs[1]["sentAt"] < blobs[2]["sentAt"]


@pytest.mark.parametrize(
    "error",
    [
        throttling_error(),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ClientError(
            {"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "PutRecords",
        ),
    ],
    ids=["throttled", "network", "server-error"],
)
def test_transient_call_errors_are_retried(
    make_client: Callable[..., Client], error: Exception
) -> None:
    kinesis = KinesisDouble(error)
    client = make_client(kinesis)
    message_id = client.track("Tap")
    client.flush(timeout=5)
    assert len(kinesis.calls) == 2
    assert [e["messageId"] for e in kinesis.stored_events()] == [message_id]
    assert client.stats.sent == 1 and client.stats.failed == 0


def test_gives_up_after_max_retries_and_reports(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble(*[{0}] * 10)
    errors = Errors()
    client = make_client(kinesis, max_retries=3, backoff_base=0.01, on_error=errors)
    ids = [client.track("Tap"), client.track("Tap")]
    started = time.monotonic()
    assert client.flush(timeout=5)
    assert time.monotonic() - started < 1.0  # 3 sleeps of at most 0.01, 0.02, 0.04 s
    assert len(kinesis.calls) == 4
    assert kinesis.stored_records() == []
    ((error, reported_ids),) = errors.calls
    assert isinstance(error, SendError)
    assert error.code == THROTTLED and error.attempts == 4
    assert reported_ids == ids
    stats = client.stats
    assert (stats.sent, stats.failed, stats.blobs_failed, stats.record_errors) == (0, 2, 1, 4)


def test_permanent_errors_are_not_retried(make_client: Callable[..., Client]) -> None:
    missing = ClientError(
        {
            "Error": {"Code": "ResourceNotFoundException"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "PutRecords",
    )
    kinesis = KinesisDouble(missing)
    errors = Errors()
    client = make_client(kinesis, on_error=errors)
    client.track("Tap")
    client.flush(timeout=5)
    assert len(kinesis.calls) == 1
    assert errors.calls[0][0].code == "ResourceNotFoundException"  # type: ignore[attr-defined]
    assert client.stats.failed == 1


# -- limits ---------------------------------------------------------------------------------------


def test_full_queue_drops_the_newest_event(make_client: Callable[..., Client]) -> None:
    gate = threading.Event()
    kinesis = KinesisDouble(gate=gate)
    errors = Errors()
    client = make_client(kinesis, flush_at=1, max_queue_size=3, on_error=errors)
    in_flight = client.track("Tap")
    assert kinesis.call_arrived.wait(5)  # the consumer is now stuck inside put_records
    queued = [client.track("Tap") for _ in range(3)]
    dropped = [client.track("Tap") for _ in range(2)]
    assert [ids for _, ids in errors.calls] == [[dropped[0]], [dropped[1]]]
    assert all(isinstance(error, QueueFullError) for error, _ in errors.calls)
    gate.set()
    client.flush(timeout=5)
    assert {e["messageId"] for e in kinesis.stored_events()} == {in_flight, *queued}
    stats = client.stats
    assert (stats.enqueued, stats.sent, stats.dropped) == (4, 4, 2)


def test_full_queue_blocks_when_asked_to(make_client: Callable[..., Client]) -> None:
    gate = threading.Event()
    kinesis = KinesisDouble(gate=gate)
    client = make_client(kinesis, flush_at=1, max_queue_size=2, on_full="block")
    client.track("Tap")
    assert kinesis.call_arrived.wait(5)
    client.track("Tap")
    client.track("Tap")
    producer = threading.Thread(target=client.track, args=("Blocked",))
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # waiting for room, not dropping
    gate.set()
    producer.join(5)
    assert not producer.is_alive()
    client.flush(timeout=5)
    assert client.stats.dropped == 0
    assert len(kinesis.stored_events()) == 4


def test_blobs_are_split_under_the_record_limit(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble()
    errors = Errors()
    limit = 1_048_576
    client = make_client(
        kinesis, flush_at=10_000, flush_bytes=50_000_000, on_error=errors, max_queue_size=100
    )
    ids = [client.track("Upload", {"data": noise(60_000)}) for _ in range(40)]  # ~2.4 MB
    too_big = client.track("Upload", {"data": noise(limit)})
    client.flush(timeout=10)
    records = kinesis.stored_records()
    assert len(records) >= 3
    assert all(len(r["Data"]) + len(r["PartitionKey"]) <= limit for r in records)
    assert [e["messageId"] for e in kinesis.stored_events()] == ids
    ((error, reported),) = errors.calls
    assert isinstance(error, EventTooLargeError) and reported == [too_big]
    assert client.stats.failed == 1


@pytest.mark.parametrize("compress", [True, False])
def test_put_records_calls_respect_500_records_and_5_mib(
    make_client: Callable[..., Client], compress: bool
) -> None:
    gate = threading.Event()
    kinesis = KinesisDouble(gate=gate)
    client = make_client(kinesis, flush_at=1, gzip=compress, max_queue_size=20_000)
    first = client.track("First")
    assert kinesis.call_arrived.wait(5)  # hold the consumer so the rest piles up
    devices = [client.device() for _ in range(3)]
    big_ids = [devices[i % 3].track("Big", {"data": noise(200_000)}) for i in range(40)]
    small_ids = [devices[i % 3].track("Small") for i in range(1200)]
    gate.set()
    client.flush(timeout=20)
    calls = kinesis.calls[1:]
    sizes = [sum(len(r["Data"]) + len(r["PartitionKey"]) for r in call.records) for call in calls]
    assert max(len(call.records) for call in calls) == 500
    assert all(len(call.records) <= 500 for call in calls)
    assert max(sizes) <= 5 * 2**20
    assert sum(sizes) > 5 * 2**20  # the big events alone needed more than one call
    stored = {e["messageId"] for e in kinesis.stored_events()}
    assert stored == {first, *big_ids, *small_ids}


# -- devices and threads --------------------------------------------------------------------------


def test_devices_keep_their_own_blobs_clock_and_partition_key(
    make_client: Callable[..., Client],
) -> None:
    kinesis = KinesisDouble()
    client = make_client(kinesis)
    slow = client.device("slow-device", clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    fast = client.device("fast-device", context={"os": {"name": "Android"}})
    slow.track("A")
    fast.track("B")
    slow.screen("C")
    client.flush(timeout=5)
    by_key = {r["PartitionKey"]: decode_blob(r["Data"]) for r in kinesis.stored_records()}
    assert set(by_key) == {"slow-device", "fast-device"}
    slow_blob, fast_blob = by_key["slow-device"], by_key["fast-device"]
    assert [e["event" if e["type"] == "track" else "name"] for e in slow_blob["batch"]] == [
        "A",
        "C",
    ]
    assert slow_blob["sentAt"] == "2026-01-01T00:00:00.000Z"
    assert {e["originalTimestamp"] for e in slow_blob["batch"]} == {"2026-01-01T00:00:00.000Z"}
    assert fast_blob["context"]["os"] == {"name": "Android"}
    assert "os" not in slow_blob["context"]
    assert fast_blob["batch"][0]["anonymousId"] == "fast-device"


def test_many_threads_lose_and_duplicate_nothing(make_client: Callable[..., Client]) -> None:
    kinesis = KinesisDouble({3}, throttling_error())
    client = make_client(kinesis, flush_at=50, flush_interval=0.05)
    ids: list[list[str]] = [[] for _ in range(4)]

    def produce(slot: int) -> None:
        device = client.device()
        for index in range(500):
            ids[slot].append(device.track("Tap", {"index": index}))

    threads = [threading.Thread(target=produce, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close(timeout=10)
    stored = [e["messageId"] for e in kinesis.stored_events()]
    assert len(stored) == 2000
    assert set(stored) == {message_id for slot in ids for message_id in slot}
