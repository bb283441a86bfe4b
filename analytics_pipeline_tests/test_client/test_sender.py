"""The sender's retry schedule: exponential backoff with full jitter, bounded."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from analytics_pipeline.client.event_queue import DeviceBuffer, OutgoingBlob, PendingEvent
from analytics_pipeline.client.sender import KinesisSender, SendError
from analytics_pipeline_testkit.doubles import KinesisDouble, throttling_error


def blob() -> OutgoingBlob:
    device = DeviceBuffer("device-1", b"{}", lambda: datetime(2026, 11, 29, tzinfo=UTC), deque())
    return OutgoingBlob(device, [PendingEvent(1, "m-1", b'{"messageId":"m-1"}', 0.0)], True)


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    sender = KinesisSender(KinesisDouble(), "events", backoff_base=0.1, backoff_cap=2.0)
    for retry in range(12):
        ceiling = min(2.0, 0.1 * 2**retry)
        delays = [sender.backoff(retry) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling / 2  # jitter spans the range, it is not a fixed delay


def test_retries_stop_after_max_retries_with_bounded_sleeps() -> None:
    sleeps: list[float] = []
    kinesis = KinesisDouble(*[throttling_error()] * 20)
    sender = KinesisSender(
        kinesis, "events", max_retries=5, backoff_base=0.5, backoff_cap=1.0, sleep=sleeps.append
    )
    outgoing = blob()
    ((failed, error),) = sender.send([outgoing])
    assert failed is outgoing
    assert isinstance(error, SendError) and error.attempts == 6
    assert len(kinesis.calls) == 6
    assert len(sleeps) == 5
    assert all(0 <= delay <= 1.0 for delay in sleeps)


def test_no_sleep_when_the_first_attempt_succeeds() -> None:
    sleeps: list[float] = []
    sender = KinesisSender(KinesisDouble(), "events", sleep=sleeps.append)
    assert sender.send([blob()]) == []
    assert sleeps == []
