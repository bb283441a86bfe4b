"""The bad-input catalogue, fast: every entry through parse_blob, then all through the handler.

The end-to-end run of the same catalogue is `e2e/test_catalogue_e2e.py`.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from analytics_pipeline.contract import (
    batches,
    blob_quarantine_id,
    event_quarantine_id,
    is_blob_rejection,
    parse_blob,
)
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline.contract.rows import EventRow
from analytics_pipeline.ingest.handler import process_event
from analytics_pipeline_testkit.catalogue import (
    ACCEPTED,
    CATALOGUE,
    LIMITS,
    BadInput,
    Build,
    event_positions,
    readme_table,
)
from analytics_pipeline_testkit.doubles import FakeS3, FakeSqs
from analytics_pipeline_testkit.lambda_events import NOW, kinesis_record, runtime

BUILD = Build(now=NOW, tag="unit")
README = Path(__file__).resolve().parents[1] / "README.md"


def stored_value(row: EventRow, column: str) -> Any:
    value = getattr(row, column)
    return msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value


def assert_verbatim(entry: BadInput, row: EventRow) -> None:
    for column, expected in entry.stored.items():
        assert stored_value(row, column) == expected, (entry.name, column)


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda entry: entry.name)
def test_parse_blob_gives_the_catalogued_outcome(entry: BadInput) -> None:
    blob = entry.build(BUILD)
    source = f"unit:{entry.name}"
    result = parse_blob(blob, received_at=NOW, source=source)

    assert all(is_blob_rejection(row) == entry.blob_level for row in result.rejected)
    if entry.blob_level:
        assert not result.accepted
        assert [(row.reason, row.message_id) for row in result.rejected] == [
            (entry.outcomes[0], None)
        ]
        assert result.rejected[0].quarantine_id == blob_quarantine_id(blob)
        return
    # Event level: each row's payload is its event's bytes, which give its position.
    positions = event_positions(blob)
    outcomes = dict.fromkeys(range(len(entry.outcomes)), ACCEPTED)
    for row in result.rejected:
        payload = row.payload.encode()
        index = positions[payload]
        assert row.quarantine_id == event_quarantine_id(payload, row.message_id, source, index)
        outcomes[index] = row.reason
    assert tuple(outcomes.values()) == entry.outcomes
    assert len(result.accepted) == entry.outcomes.count(ACCEPTED)
    for row in result.accepted:
        assert_verbatim(entry, row)


def test_the_catalogue_is_big_enough_and_covers_every_reason_code() -> None:
    assert len(CATALOGUE) >= 30
    covered = {outcome for entry in CATALOGUE for outcome in entry.outcomes}
    assert {reason.value for reason in Reason} <= covered
    assert ACCEPTED in covered


def test_every_catalogue_entry_through_the_handler_at_once() -> None:
    """One Kinesis batch holding the whole catalogue: no failure, every event accounted for."""
    sqs = FakeSqs()
    s3 = FakeS3()
    records = [
        kinesis_record(str(100 + i), entry.build(BUILD)) for i, entry in enumerate(CATALOGUE)
    ]

    response = process_event({"Records": records}, runtime(sqs, s3))

    assert response["batchItemFailures"] == []
    events: list[EventRow] = []
    reasons: Counter[str] = Counter()
    for entry in sqs.sent:
        attributes = entry["MessageAttributes"]
        kind = attributes["kind"]["StringValue"]
        if attributes["payload"]["StringValue"] == "s3":
            body = s3.objects[json.loads(entry["MessageBody"])["key"]]
        else:
            body = base64.b64decode(entry["MessageBody"])
        ndjson = batches.decompress(body)
        if kind == "events":
            events += batches.decode_event_rows(ndjson)
        else:
            reasons.update(row.reason for row in batches.decode_quarantine_rows(ndjson))

    expected = Counter(o for entry in CATALOGUE for o in entry.outcomes if o != ACCEPTED)
    assert reasons == expected
    accepted_names = Counter(row.message_id.split("-", 1)[1].rsplit("-", 1)[0] for row in events)
    assert accepted_names == Counter(
        {
            entry.name: entry.outcomes.count(ACCEPTED)
            for entry in CATALOGUE
            if ACCEPTED in entry.outcomes
        }
    )
    by_name = {entry.name: entry for entry in CATALOGUE}
    for row in events:
        assert_verbatim(by_name[row.message_id.split("-", 1)[1].rsplit("-", 1)[0]], row)
    stats = response["ingestStats"]
    assert stats["events_accepted"] == len(events)
    assert stats["rows_rejected"] == sum(expected.values())


def test_the_readme_table_is_the_catalogue() -> None:
    assert readme_table() in README.read_text(), "regenerate with catalogue.readme_table()"


def test_catalogue_limits_are_the_documented_defaults() -> None:
    from analytics_pipeline.contract.limits import Limits
    from analytics_pipeline.settings import Settings

    assert Limits.from_settings(Settings.from_env({})) == LIMITS


def test_a_blob_of_millions_of_tiny_elements_is_counted_without_decoding_them() -> None:
    """~240 MB of element objects before the fix; now the text and its projections only."""
    import tracemalloc

    entry = next(entry for entry in CATALOGUE if entry.name == "tiny_elements_4m")
    data = entry.build(BUILD)
    tracemalloc.start()
    try:
        result = parse_blob(data, received_at=datetime.now(UTC), source="tiny")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.rejected[0].reason == Reason.BLOB_TOO_MANY_EVENTS
    assert "4194294 events" in result.rejected[0].detail
    assert peak < 6 * LIMITS.max_decompressed_bytes, f"peak {peak / 2**20:.0f} MiB"


LIMIT_VIOLATIONS = {
    # setting: (a small value, a blob over it and only over it, the reason code)
    "ANALYTICS_MAX_BLOB_BYTES": (
        "300",
        lambda b: b.blob_text([b.event("x", 0)] * 2),
        "blob_too_large",
    ),
    "ANALYTICS_MAX_DECOMPRESSED_BYTES": (
        "300",
        lambda b: b.blob([b.event("x", 0)] * 2),
        "blob_decompressed_too_large",
    ),
    "ANALYTICS_MAX_EVENTS_PER_BLOB": (
        "2",
        lambda b: b.blob([b.event("x", i) for i in range(3)]),
        "blob_too_many_events",
    ),
    "ANALYTICS_MAX_EVENT_BYTES": ("100", lambda b: b.blob([b.event("x", 0)]), "event_too_large"),
    "ANALYTICS_MAX_NESTING_DEPTH": (
        "4",
        lambda b: b.blob([b.event("x", 0, properties={"a": {}})]),
        "blob_nesting_too_deep",
    ),
    "ANALYTICS_LATE_ARRIVAL_DAYS": (
        "1",
        lambda b: b.blob([b.event("x", 0, timestamp=b.iso(b.now - 2 * timedelta(days=1)))]),
        "timestamp_too_old",
    ),
    "ANALYTICS_FUTURE_TOLERANCE_SECONDS": (
        "10",
        lambda b: b.blob([b.event("x", 0, timestamp=b.iso(b.now + timedelta(seconds=20)))]),
        "timestamp_in_future",
    ),
}


@pytest.mark.parametrize("setting", sorted(LIMIT_VIOLATIONS))
def test_each_limit_is_a_setting_and_its_violation_has_its_own_reason(setting: str) -> None:
    from analytics_pipeline.contract.limits import Limits
    from analytics_pipeline.settings import SETTINGS_DOC, Settings

    value, build, reason = LIMIT_VIOLATIONS[setting]
    data = build(BUILD)
    default = Limits.from_settings(Settings.from_env({}))
    lowered = Limits.from_settings(Settings.from_env({setting: value}))

    assert setting in SETTINGS_DOC and f"`{setting}` | `{SETTINGS_DOC[setting][0]}`" in (
        README.read_text()
    )
    assert not parse_blob(data, received_at=NOW, source="s", limits=default).rejected
    rejected = parse_blob(data, received_at=NOW, source="s", limits=lowered).rejected
    assert {row.reason for row in rejected} == {reason}


def test_the_limit_reasons_are_distinct() -> None:
    reasons = [reason for _, _, reason in LIMIT_VIOLATIONS.values()]
    assert len(set(reasons)) == len(reasons)
