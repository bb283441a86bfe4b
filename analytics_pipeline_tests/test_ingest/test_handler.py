"""The handler with the real contract parser and in-process SQS/S3 doubles."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

from analytics_pipeline.contract import batches
from analytics_pipeline.ingest.handler import process_event
from analytics_pipeline_testkit.doubles import FakeS3, FakeSqs
from analytics_pipeline_testkit.lambda_events import NOW, kinesis_record, runtime
from analytics_pipeline_testkit.traffic import blob, track_event

YESTERDAY = NOW - timedelta(days=1)


def day_of(entry: dict[str, Any]) -> str:
    return entry["MessageAttributes"]["day"]["StringValue"]


def three_records() -> tuple[dict[str, Any], dict[str, str]]:
    """Sequence numbers chosen so string order and numeric order disagree."""
    today, yesterday = NOW.date().isoformat(), YESTERDAY.date().isoformat()
    event = {
        "Records": [
            kinesis_record("9", blob([track_event("a", NOW)], sent_at=NOW)),
            kinesis_record("10", blob([track_event("b", YESTERDAY)], gzipped=True, sent_at=NOW)),
            kinesis_record(
                "11", blob([track_event("c", NOW), track_event("d", YESTERDAY)], sent_at=NOW)
            ),
        ]
    }
    return event, {"today": today, "yesterday": yesterday}


def test_all_batches_sent_means_no_failures_and_every_event_once() -> None:
    sqs = FakeSqs()
    event, _ = three_records()

    response = process_event(event, runtime(sqs))

    assert response["batchItemFailures"] == []
    rows = [
        row
        for entry in sqs.sent
        for row in batches.decode_event_rows(
            batches.decompress(batches.body_from_inline(entry["MessageBody"]))
        )
    ]
    assert sorted(r.message_id for r in rows) == ["a", "b", "c", "d"]
    assert response["ingestStats"]["events_accepted"] == 4
    assert response["ingestStats"]["batches_inline"] == 2


def test_failed_batch_reports_the_lowest_contributing_sequence_number_numerically() -> None:
    event, days = three_records()
    today_fails = FakeSqs(
        entry_fails=lambda e, _: "InternalError" if day_of(e) == days["today"] else None
    )
    yesterday_fails = FakeSqs(
        entry_fails=lambda e, _: "InternalError" if day_of(e) == days["yesterday"] else None
    )

    # today's batch holds records 9 and 11; yesterday's holds 10 and 11.
    assert process_event(event, runtime(today_fails))["batchItemFailures"] == [
        {"itemIdentifier": "9"}
    ]
    assert process_event(event, runtime(yesterday_fails))["batchItemFailures"] == [
        {"itemIdentifier": "10"}
    ]
    assert {day_of(e) for e in yesterday_fails.sent} == {days["today"]}


def test_failed_s3_put_fails_the_batch_and_sends_no_dangling_pointer() -> None:
    event, days = three_records()
    s3 = FakeS3()
    probe = process_event(event, runtime(FakeSqs(), s3, ANALYTICS_SQS_MESSAGE_MAX_BYTES="200"))
    assert probe["ingestStats"]["batches_s3"] == 2
    yesterday_key = next(k for k in s3.objects if f"/{days['yesterday']}/" in k)

    sqs = FakeSqs()
    response = process_event(
        event,
        runtime(sqs, FakeS3(fail_keys={yesterday_key}), ANALYTICS_SQS_MESSAGE_MAX_BYTES="200"),
    )

    assert response["batchItemFailures"] == [{"itemIdentifier": "10"}]
    assert [day_of(e) for e in sqs.sent] == [days["today"]]
    assert all(e["MessageAttributes"]["payload"]["StringValue"] == "s3" for e in sqs.sent)


def test_unreadable_blob_becomes_a_quarantine_batch() -> None:
    sqs = FakeSqs()

    response = process_event(
        {"Records": [kinesis_record("5", b"\x1f\x8bnot really gzip")]}, runtime(sqs)
    )

    assert response["batchItemFailures"] == []
    (entry,) = sqs.sent
    assert entry["MessageAttributes"]["kind"]["StringValue"] == "quarantine"
    (row,) = batches.decode_quarantine_rows(
        batches.decompress(batches.body_from_inline(entry["MessageBody"]))
    )
    assert row.reason == "blob_gzip_invalid"
    assert row.source == "kinesis:analytics-events:shardId-000000000003:5"
    assert row.received_at == NOW


def test_duplicates_across_records_are_dropped_and_counted() -> None:
    sqs = FakeSqs()
    event = {
        "Records": [
            kinesis_record("1", blob([track_event("same", NOW)], sent_at=NOW)),
            kinesis_record(
                "2", blob([track_event("same", NOW), track_event("other", NOW)], sent_at=NOW)
            ),
        ]
    }

    response = process_event(event, runtime(sqs))

    assert response["ingestStats"]["duplicates_dropped"] == 1
    assert response["ingestStats"]["events_accepted"] == 2


def test_handler_module_imports_without_dagster_or_pandas() -> None:
    code = (
        "import sys, analytics_pipeline.ingest.handler as h; h._default_parse_blob();"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'pandas')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
