"""Property tests of the Lambda handler: any records, any SQS failures -> never raises, and every
event is accounted for (sent once, or reported back to Lambda for retry, never silently lost)."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics_pipeline.contract import batches
from analytics_pipeline.contract.parse import parse_blob
from analytics_pipeline.ingest.handler import process_event
from analytics_pipeline_testkit.catalogue import CATALOGUE, Build
from analytics_pipeline_testkit.doubles import FakeS3, FakeSqs
from analytics_pipeline_testkit.lambda_events import NOW, kinesis_record, runtime

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUILD = Build(now=NOW, tag="prop")
# The catalogue's small inputs (the multi-megabyte ones are covered once in test_catalogue.py).
CATALOGUE_BLOBS = [data for data in (entry.build(BUILD) for entry in CATALOGUE) if len(data) < 8192]

message_ids = st.sampled_from([f"m-{i}" for i in range(8)])  # a small pool: duplicates happen
timestamps = st.sampled_from(
    ["2026-11-29T11:59:00Z", "2026-11-28T23:59:59.999Z", "2026-11-29T11:00:00+05:00", "never", 7]
)
events = st.fixed_dictionaries(
    {"messageId": message_ids, "anonymousId": st.sampled_from(["a", "", 3])},
    optional={
        "type": st.sampled_from(["track", "screen", "identify", "purchase"]),
        "event": st.text(max_size=4),
        "originalTimestamp": timestamps,
        "timestamp": timestamps,
        "properties": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
        | st.just([1]),
    },
) | st.sampled_from([None, "x", 1, []])


@st.composite
def record_data(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["blob", "gzip blob", "catalogue", "bytes"]))
    if kind == "catalogue":
        return draw(st.sampled_from(CATALOGUE_BLOBS))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    blob = {"sentAt": "2026-11-29T11:59:30Z", "batch": draw(st.lists(events, max_size=6))}
    text = json.dumps(blob).encode()
    return gzip.compress(text) if kind == "gzip blob" else text


def rows_of(sqs: FakeSqs) -> tuple[list[Any], list[Any]]:
    events_sent, quarantine_sent = [], []
    for entry in sqs.sent:
        ndjson = batches.decompress(base64.b64decode(entry["MessageBody"]))
        if entry["MessageAttributes"]["kind"]["StringValue"] == "events":
            events_sent += batches.decode_event_rows(ndjson)
        else:
            quarantine_sent += batches.decode_quarantine_rows(ndjson)
    return events_sent, quarantine_sent


@FAST
@given(
    records=st.lists(record_data(), max_size=8),
    failing_prefixes=st.sets(st.sampled_from("0123456789abcdef"), max_size=3),
)
def test_any_records_any_send_failures_nothing_lost_nothing_twice(
    records: list[bytes], failing_prefixes: set[str]
) -> None:
    def entry_fails(entry: dict[str, Any], attempt: int) -> str | None:
        batch_id = entry["MessageAttributes"]["batch_id"]["StringValue"]
        return "InternalError" if batch_id[0] in failing_prefixes else None

    sqs = FakeSqs(entry_fails=entry_fails)
    sequence_numbers = [str(500 + 7 * i) for i in range(len(records))]
    event = {
        "Records": [kinesis_record(s, d) for s, d in zip(sequence_numbers, records, strict=True)]
    }

    response = process_event(event, runtime(sqs, FakeS3()))  # must not raise

    # What the contract says about each record, independently of the handler.
    verdicts = []
    for sequence_number, data in zip(sequence_numbers, records, strict=True):
        source = f"kinesis:analytics-events:shardId-000000000003:{sequence_number}"
        verdicts.append(parse_blob(data, received_at=NOW, source=source))
    stats = response["ingestStats"]
    accepted_total = sum(len(v.accepted) for v in verdicts)
    rejected_total = sum(len(v.rejected) for v in verdicts)
    assert stats["events_accepted"] + stats["duplicates_dropped"] == accepted_total
    assert stats["rows_rejected"] == rejected_total

    sent_events, sent_quarantine = rows_of(sqs)
    sent_ids = [row.message_id for row in sent_events]
    assert len(sent_ids) == len(set(sent_ids)), "a messageId sent twice by one invocation"
    failures = response["batchItemFailures"]
    if not failures:
        assert len(sent_events) == stats["events_accepted"]
        assert len(sent_quarantine) == rejected_total
        retried_from = None
    else:
        assert len(failures) == 1
        retried_from = int(failures[0]["itemIdentifier"])
        assert str(retried_from) in sequence_numbers
    # Every record before the retry point is fully delivered: Lambda will not send it again.
    sent_quarantine_ids = {row.quarantine_id for row in sent_quarantine}
    for sequence_number, verdict in zip(sequence_numbers, verdicts, strict=True):
        if retried_from is not None and int(sequence_number) >= retried_from:
            break
        assert {row.message_id for row in verdict.accepted} <= set(sent_ids)
        assert {row.quarantine_id for row in verdict.rejected} <= sent_quarantine_ids
