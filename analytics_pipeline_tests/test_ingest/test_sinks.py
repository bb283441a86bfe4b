"""SQS batching limits and retry of only the failed entries."""

from __future__ import annotations

from analytics_pipeline.ingest.sinks import OutgoingMessage, SqsS3Sink, chunk_messages
from analytics_pipeline_testkit.doubles import FakeS3, FakeSqs


def message(body: str, size: int | None = None) -> OutgoingMessage:
    return OutgoingMessage(body=body, attributes={}, size=len(body) if size is None else size)


def sink(sqs: FakeSqs, s3: FakeS3 | None = None) -> SqsS3Sink:
    return SqsS3Sink(sqs, s3 or FakeS3(), "queue-url", "bucket", attempts=3, sleep=lambda _: None)


def test_chunks_respect_ten_entries_and_one_mebibyte() -> None:
    small = [message(str(i)) for i in range(23)]
    large = [message(str(i), size=400_000) for i in range(5)]

    assert [len(c) for c in chunk_messages(small)] == [10, 10, 3]
    assert chunk_messages(large) == [[0, 1], [2, 3], [4]]
    assert chunk_messages([message("a", 1_048_576), message("b", 1)]) == [[0], [1]]


def test_only_failed_entries_are_sent_again() -> None:
    sqs = FakeSqs(
        entry_fails=lambda e, attempt: (
            "InternalError" if attempt == 0 and e["MessageBody"] in {"2", "5"} else None
        )
    )

    failed = sink(sqs).send_messages([message(str(i)) for i in range(8)])

    assert failed == set()
    assert [len(call) for call in sqs.calls] == [8, 2]
    assert [e["MessageBody"] for e in sqs.calls[1]] == ["2", "5"]
    assert sorted(e["MessageBody"] for e in sqs.sent) == [str(i) for i in range(8)]


def test_entries_failing_every_attempt_are_reported() -> None:
    sqs = FakeSqs(
        entry_fails=lambda e, attempt: "InternalError" if e["MessageBody"] == "3" else None
    )

    failed = sink(sqs).send_messages([message(str(i)) for i in range(12)])

    assert failed == {3}
    assert len(sqs.calls) == 1 + 1 + 2  # two chunks, then two retries of entry 3


def test_sender_faults_are_not_retried() -> None:
    sqs = FakeSqs(
        entry_fails=lambda e, attempt: "InvalidParameterValue" if e["MessageBody"] == "1" else None
    )

    assert sink(sqs).send_messages([message("0"), message("1")]) == {1}
    assert len(sqs.calls) == 1


def test_a_call_failing_after_botocores_retries_reports_its_entries_without_retrying() -> None:
    # The double has no botocore underneath: its exception stands for a call botocore has
    # already retried, so the sink must not stack retries of its own on top.
    sqs = FakeSqs(call_fails=lambda attempt: attempt == 0)

    assert sink(sqs).send_messages([message(str(i)) for i in range(12)]) == set(range(10))
    assert len(sqs.calls) == 2  # the failed chunk once, the second chunk once
    assert sorted(e["MessageBody"] for e in sqs.sent) == ["10", "11"]


def test_s3_put_is_one_call_and_reports_failure() -> None:
    s3 = FakeS3(fail_keys={"bad"})
    target = sink(FakeSqs(), s3)

    assert target.put_object("good", b"x") is True
    assert target.put_object("bad", b"x") is False
    assert s3.objects == {"good": b"x"}
    assert s3.puts == ["good", "bad"]  # no retry of its own on top of botocore's
