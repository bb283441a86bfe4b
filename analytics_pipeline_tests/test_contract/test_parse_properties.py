"""Property tests: parse_blob is total, and every event is accounted for exactly once."""

from __future__ import annotations

import gzip
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics_pipeline.contract import (
    Limits,
    ParseResult,
    Reason,
    blob_quarantine_id,
    event_quarantine_id,
    is_blob_rejection,
)
from analytics_pipeline_testkit.blobs import SOURCE, batch_spans, parse

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REASONS = {reason.value for reason in Reason}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
    | st.sampled_from(['"', "\\", "[", "]", "{", "}", '\\"', "]]}}", "[{\\"])
)
json_keys = st.text(max_size=6) | st.sampled_from(["[", "}", '"', "\\"])
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=25,
)
timestamps = st.sampled_from(
    [
        "2026-11-29T11:59:58.001Z",
        "2026-11-29T12:00:00+01:00",
        "2026-11-29 11:00:00",
        "2026-11-29",
        "1999-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "not a time",
        "",
    ]
)
field_values = {
    "type": st.sampled_from(["track", "screen", "page", "identify", "group", "alias", "x"]),
    "messageId": st.text(max_size=3) | st.text(min_size=99, max_size=102),
    "userId": st.none() | st.text(max_size=5),
    "anonymousId": st.none() | st.text(max_size=5),
    "event": st.text(max_size=5),
    "name": st.text(max_size=5),
    "groupId": st.text(max_size=5),
    "previousId": st.text(max_size=5),
    "timestamp": timestamps,
    "originalTimestamp": timestamps,
    "sentAt": timestamps,
    "properties": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    "traits": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    "context": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
}


VALID_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Video Recorded",
    "messageId": "m",
    "anonymousId": "a-1",
    "originalTimestamp": "2026-11-29T11:59:58.001Z",
    "properties": {"duration_ms": 5400},
}


@st.composite
def events(draw: st.DrawFn) -> Any:
    """A valid event with some fields removed, replaced plausibly, or replaced by garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    event = dict(VALID_EVENT, messageId=draw(st.text(min_size=1, max_size=8)))
    for key, plausible in field_values.items():
        change = draw(st.integers(0, 27))
        if change == 0:
            event.pop(key, None)
        elif change in (1, 2):
            event[key] = draw(plausible)
        elif change == 3:
            event[key] = draw(json_values)
    return event


@st.composite
def blobs(draw: st.DrawFn) -> tuple[bytes, int]:
    batch = draw(st.lists(events(), max_size=8))
    blob: dict[str, Any] = {"batch": batch}
    if draw(st.booleans()):
        blob["sentAt"] = "2026-11-29T12:00:05.120Z"
    if draw(st.booleans()):
        blob["context"] = draw(st.dictionaries(st.text(max_size=4), json_values, max_size=3))
    data = msgspec.json.encode(blob)
    return (gzip.compress(data) if draw(st.booleans()) else data), len(batch)


def assert_well_formed(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    for row in result.rejected:
        assert row.reason in REASONS
        assert isinstance(row.payload, str) and row.detail
        assert len(row.quarantine_id) == 32
    for row in result.accepted:
        assert row.message_id and (row.user_id or row.anonymous_id)
        assert row.timestamp.tzinfo is not None and row.received_at.tzinfo is not None


@FAST
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_result(data: bytes) -> None:
    assert_well_formed(parse(data))


@FAST
@given(st.binary(max_size=512))
def test_any_bytes_behind_gzip_magic_give_a_result(data: bytes) -> None:
    assert_well_formed(parse(b"\x1f\x8b" + data))
    assert_well_formed(parse(gzip.compress(data)))


@FAST
@given(json_values, st.booleans())
def test_any_json_value_gives_a_result(value: Any, compress: bool) -> None:
    data = msgspec.json.encode(value)
    assert_well_formed(parse(gzip.compress(data) if compress else data))


@FAST
@given(blobs())
def test_every_event_is_accepted_or_rejected_exactly_once(blob: tuple[bytes, int]) -> None:
    data, event_count = blob

    result = parse(data)

    assert_well_formed(result)
    if any(is_blob_rejection(row) for row in result.rejected):
        assert result.accepted == [] and len(result.rejected) == 1
        assert result.rejected[0].quarantine_id == blob_quarantine_id(data)
        return
    # Rows come in batch order: match each payload to the next element with the same bytes
    # (identical elements get identical verdicts, so the first free one is the right one).
    spans = batch_spans(data)
    rejected_positions = []
    for row in result.rejected:
        start = rejected_positions[-1] + 1 if rejected_positions else 0
        index = spans.index(row.payload.encode(), start)
        assert row.quarantine_id == event_quarantine_id(spans[index], row.message_id, SOURCE, index)
        rejected_positions.append(index)
    assert len(result.accepted) + len(result.rejected) == event_count


def json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0


@FAST
@given(json_values, st.integers(min_value=3, max_value=9))
def test_nesting_limit_matches_the_real_depth(properties: Any, max_depth: int) -> None:
    # blob (1) > batch (2) > event (3) > properties
    event = {"type": "track", "event": "e", "messageId": "m", "anonymousId": "a"}
    event["properties"] = {"p": properties}
    depth = 3 + json_depth(event["properties"])
    data = msgspec.json.encode({"batch": [event]})

    result = parse(data, Limits(max_nesting_depth=max_depth))

    too_deep = [row for row in result.rejected if row.reason == Reason.BLOB_NESTING_TOO_DEEP]
    assert bool(too_deep) == (depth > max_depth)
    if depth <= max_depth:
        assert len(result.accepted) == 1
