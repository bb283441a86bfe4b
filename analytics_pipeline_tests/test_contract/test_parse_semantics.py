"""What accepted rows hold: names, identities, clock-skew correction, context merge, limits."""

from __future__ import annotations

import gzip
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from analytics_pipeline.contract import (
    DEFAULT_LIMITS,
    EventRow,
    Limits,
    Reason,
    blob_quarantine_id,
    event_quarantine_id,
    is_blob_rejection,
    parse_blob,
)
from analytics_pipeline_testkit.blobs import (
    BLOB_CONTEXT,
    RECEIVED_AT,
    REMOVE,
    SOURCE,
    batch_spans,
    blob_bytes,
    nested,
    parse,
    track,
)


def only_row(data: bytes, limits: Limits | None = None) -> EventRow:
    result = parse(data, limits)
    assert result.rejected == []
    assert len(result.accepted) == 1
    return result.accepted[0]


def json_of(raw: msgspec.Raw) -> Any:
    return msgspec.json.decode(raw)


# --- names and identities --------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["screen", "page"])
def test_screen_and_page_name_becomes_the_event_column(event_type: str) -> None:
    row = only_row(blob_bytes([track(type=event_type, event=REMOVE, name="Feed")]))

    assert (row.type, row.event) == (event_type, "Feed")


def test_screen_without_a_name_is_accepted_with_no_event() -> None:
    assert only_row(blob_bytes([track(type="screen", event=REMOVE)])).event is None


def test_track_uses_event_not_name() -> None:
    row = only_row(blob_bytes([track(event="Video Shared", name="ignored")]))

    assert row.event == "Video Shared"


@pytest.mark.parametrize(
    ("event_type", "extra", "column", "value"),
    [
        ("identify", {"traits": {"plan": "pro"}}, "traits", {"plan": "pro"}),
        ("group", {"groupId": "g-7", "traits": {"seats": 5}}, "group_id", "g-7"),
        ("alias", {"previousId": "a-old"}, "previous_id", "a-old"),
    ],
)
def test_non_track_types_carry_their_own_ids(
    event_type: str, extra: dict[str, Any], column: str, value: Any
) -> None:
    row = only_row(blob_bytes([track(type=event_type, event=REMOVE, userId="u-9", **extra)]))

    assert row.event is None
    stored = getattr(row, column)
    assert (json_of(stored) if isinstance(stored, msgspec.Raw) else stored) == value


def test_user_id_alone_is_identity_enough() -> None:
    row = only_row(blob_bytes([track(anonymousId=REMOVE, userId="u-9")]))

    assert (row.user_id, row.anonymous_id) == ("u-9", None)


def test_message_id_of_exactly_100_chars_is_accepted() -> None:
    assert only_row(blob_bytes([track("m" * 100)])).message_id == "m" * 100


@pytest.mark.parametrize(
    "name",
    [
        "'; DROP TABLE events; --",
        'Robert"); DELETE FROM events WHERE ("1"="1',
        "nul\x00in the middle",
        "tab\tnewline\ncarriage\rbell\x07escape\x1b",
        "emoji 🎬 and ünïcödé and \u2028 line separator",
        "back\\slash and {brackets] in [strings}",
    ],
)
def test_names_are_kept_verbatim(name: str) -> None:
    row = only_row(blob_bytes([track(event=name, userId=name, properties={name: name})]))

    assert row.event == name
    assert row.user_id == name
    assert json_of(row.properties) == {name: name}


def test_unknown_fields_are_ignored() -> None:
    row = only_row(blob_bytes([track(integrations={"All": True}, receivedAt="whenever")]))

    assert row.message_id == "m-1"


# --- clock skew --------------------------------------------------------------------------------


def test_skew_correction_shifts_original_timestamp_by_the_send_delay() -> None:
    # sent 12:00:05.120 by the device clock, created 7.119 s before that; arrived 12:00:06
    row = only_row(blob_bytes([track(originalTimestamp="2026-11-29T11:59:58.001Z")]))

    assert row.timestamp == datetime(2026, 11, 29, 11, 59, 58, 881_000, tzinfo=UTC)
    assert row.original_timestamp == datetime(2026, 11, 29, 11, 59, 58, 1_000, tzinfo=UTC)
    assert row.sent_at == datetime(2026, 11, 29, 12, 0, 5, 120_000, tzinfo=UTC)
    assert row.received_at == RECEIVED_AT


def test_skew_correction_undoes_a_device_clock_that_is_hours_off() -> None:
    # the device clock is 3 h behind; the event happened 2 s before the send
    row = only_row(
        blob_bytes([track(originalTimestamp="2026-11-29T08:59:58Z")], sentAt="2026-11-29T09:00:00Z")
    )

    assert row.timestamp == RECEIVED_AT - timedelta(seconds=2)


def test_explicit_timestamp_is_kept_as_sent() -> None:
    row = only_row(blob_bytes([track(timestamp="2026-11-29T11:00:00Z")]))

    assert row.timestamp == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
    assert row.original_timestamp == datetime(2026, 11, 29, 11, 59, 58, 1_000, tzinfo=UTC)


def test_event_level_sent_at_wins_over_the_blob_level_one() -> None:
    row = only_row(
        blob_bytes([track(originalTimestamp="2026-11-29T11:59:50Z", sentAt="2026-11-29T11:59:55Z")])
    )

    assert row.sent_at == datetime(2026, 11, 29, 11, 59, 55, tzinfo=UTC)
    assert row.timestamp == RECEIVED_AT - timedelta(seconds=5)


def test_without_sent_at_the_original_timestamp_is_used_as_is() -> None:
    row = only_row(blob_bytes([track(originalTimestamp="2026-11-29T11:00:00Z")], sentAt=REMOVE))

    assert row.timestamp == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
    assert row.sent_at is None


def test_without_any_client_time_the_arrival_time_is_used() -> None:
    row = only_row(blob_bytes([track(originalTimestamp=REMOVE)]))

    assert row.timestamp == RECEIVED_AT
    assert row.original_timestamp is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-29T13:00:00+01:00", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("2026-11-29T07:00:00-0500", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("2026-11-29T12:00:00", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("2026-11-29 12:00:00Z", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
        ("2026-11-29T12:00:00.123456789Z", datetime(2026, 11, 29, 12, 0, 0, 123457, tzinfo=UTC)),
        ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),  # ISO 8601 fallback path
        ("20261129T120000Z", datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),
    ],
)
def test_timestamps_are_normalised_to_aware_utc(text: str, expected: datetime) -> None:
    row = only_row(blob_bytes([track(timestamp=text, originalTimestamp=text)]))

    assert row.timestamp == expected
    assert row.timestamp.tzinfo is UTC
    assert row.original_timestamp is not None and row.original_timestamp.tzinfo is UTC


def test_received_at_is_normalised_to_utc() -> None:
    naive = parse_blob(blob_bytes([track()]), received_at=datetime(2026, 11, 29, 12), source="s")
    offset = parse_blob(
        blob_bytes([track()]),
        received_at=datetime(2026, 11, 29, 13, tzinfo=timezone(timedelta(hours=1))),
        source="s",
    )

    expected = datetime(2026, 11, 29, 12, tzinfo=UTC)
    assert naive.accepted[0].received_at == expected
    assert offset.accepted[0].received_at == expected
    assert offset.accepted[0].received_at.tzinfo is UTC


def test_time_window_edges_are_inclusive() -> None:
    limits = Limits(future_tolerance_seconds=60, late_arrival_days=1)
    edge_future = RECEIVED_AT + timedelta(seconds=60)
    edge_past = RECEIVED_AT - timedelta(days=1)
    batch = [
        track("future-edge", timestamp=edge_future.isoformat()),
        track("past-edge", timestamp=edge_past.isoformat()),
        track("future-over", timestamp=(edge_future + timedelta(milliseconds=1)).isoformat()),
        track("past-over", timestamp=(edge_past - timedelta(milliseconds=1)).isoformat()),
    ]

    result = parse(blob_bytes(batch), limits)

    assert [row.message_id for row in result.accepted] == ["future-edge", "past-edge"]
    assert [(row.message_id, row.reason) for row in result.rejected] == [
        ("future-over", Reason.TIMESTAMP_IN_FUTURE),
        ("past-over", Reason.TIMESTAMP_TOO_OLD),
    ]


def test_skew_arithmetic_overflow_is_an_invalid_timestamp() -> None:
    event = track(originalTimestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T23:59:59Z")

    row = parse(blob_bytes([event])).rejected[0]

    assert row.reason == Reason.INVALID_TIMESTAMP


# --- context ---------------------------------------------------------------------------------


def test_blob_context_is_merged_into_the_event_and_event_keys_win() -> None:
    event_context = {"os": {"name": "Android"}, "ip": "203.0.113.9"}

    row = only_row(blob_bytes([track(context=event_context)]))

    assert json_of(row.context) == {
        "app": BLOB_CONTEXT["app"],
        "library": BLOB_CONTEXT["library"],
        "os": {"name": "Android"},  # replaced whole, not merged deeply
        "ip": "203.0.113.9",
    }


@pytest.mark.parametrize("event_context", [REMOVE, None])
def test_event_without_context_gets_the_blob_context(event_context: Any) -> None:
    row = only_row(blob_bytes([track(context=event_context)]))

    assert json_of(row.context) == BLOB_CONTEXT


def test_without_blob_context_the_event_context_is_kept_byte_for_byte() -> None:
    data = blob_bytes([track(context={"b": 1, "a": [1, 2]})], context=REMOVE)

    row = only_row(data)

    assert bytes(row.context) == b'{"b":1,"a":[1,2]}'


def test_without_any_context_the_column_is_json_null() -> None:
    row = only_row(blob_bytes([track()], context=REMOVE))

    assert bytes(row.context) == b"null"


def test_properties_and_traits_are_raw_json_passed_through() -> None:
    properties = {"nested": {"list": [1, 2.5, None, True, "x"]}, "n": -0.0}

    row = only_row(blob_bytes([track(properties=properties, traits=None)]))

    assert json_of(row.properties) == properties
    assert bytes(row.traits) == b"null"


# --- encodings and limits ---------------------------------------------------------------------


def test_gzip_and_plain_blobs_give_identical_rows() -> None:
    batch = [
        track("m-1"),
        track("m-2", type="screen", name="Feed", context={"ip": "x"}),
        track("m-3", userId=5),
        ["not", "an", "event"],
    ]

    plain = parse(blob_bytes(batch))
    compressed = parse(blob_bytes(batch, compress=True))

    assert len(plain.accepted) == 2 and len(plain.rejected) == 2
    assert compressed.accepted == plain.accepted
    assert compressed.rejected == plain.rejected


def test_concatenated_gzip_members_are_one_blob() -> None:
    text = blob_bytes([track()])
    data = gzip.compress(text[:20]) + gzip.compress(text[20:])

    assert parse(data).accepted == parse(text).accepted


def test_gzip_is_detected_by_magic_bytes_not_by_guessing() -> None:
    # A plain blob is never mistaken for gzip, whatever it contains.
    row = only_row(blob_bytes([track(event="\x1f\x8b")]))

    assert row.event == "\x1f\x8b"


def _decompression_cost(data: bytes, limits: Limits) -> tuple[float, int, list[str]]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = parse(data, limits)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return elapsed, peak, [row.reason for row in result.rejected]


def test_gzip_bomb_of_a_gibibyte_is_capped_without_allocating_it() -> None:
    # 64 concatenated members of 16 MiB of zeros: 1 GiB inflated, about 1 MB on the wire.
    bomb = gzip.compress(bytes(16 << 20), 9) * 64
    assert len(bomb) <= DEFAULT_LIMITS.max_blob_bytes
    limits = Limits(max_decompressed_bytes=1 << 20)

    elapsed, peak, reasons = _decompression_cost(bomb, limits)

    assert reasons == [Reason.BLOB_DECOMPRESSED_TOO_LARGE]
    assert peak < 4 * limits.max_decompressed_bytes  # never near the 1 GiB
    assert elapsed < 1.0


def test_single_member_gzip_bomb_is_capped_too() -> None:
    bomb = gzip.compress(bytes(64 << 20), 9)

    elapsed, peak, reasons = _decompression_cost(bomb, DEFAULT_LIMITS)

    assert reasons == [Reason.BLOB_DECOMPRESSED_TOO_LARGE]
    assert peak < 3 * DEFAULT_LIMITS.max_decompressed_bytes
    assert elapsed < 1.0


def test_decompressed_size_exactly_at_the_cap_is_accepted() -> None:
    text = blob_bytes([track()])
    limits = Limits(max_decompressed_bytes=len(text))

    assert len(parse(gzip.compress(text), limits).accepted) == 1
    over = Limits(max_decompressed_bytes=len(text) - 1)
    assert parse(gzip.compress(text), over).rejected[0].reason == (
        Reason.BLOB_DECOMPRESSED_TOO_LARGE
    )


# --- nesting ---------------------------------------------------------------------------------

# blob object (1) > batch (2) > event (3) > properties (4): properties nested n deep -> 3 + n


def test_nesting_exactly_at_the_limit_is_accepted_and_one_more_is_not() -> None:
    at_limit = parse(blob_bytes([track(properties=nested(61))]))
    over = parse(blob_bytes([track(properties=nested(62))]))

    assert len(at_limit.accepted) == 1
    assert [row.reason for row in over.rejected] == [Reason.BLOB_NESTING_TOO_DEEP]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    tricky = "[{" * 100 + '\\"' + "\\" * 3 + '"[[[' + "}]" * 7
    row = only_row(blob_bytes([track(properties={tricky: tricky, "k": [tricky]})]))

    assert json_of(row.properties)[tricky] == tricky


def test_brackets_inside_strings_cannot_hide_real_nesting() -> None:
    # Keys "]" after each opener and "[" before each closer balance the naive bracket count.
    text = '{"]":' * 70 + "1" + ',"[":0}' * 70
    data = blob_bytes([track(properties={"x": 0})]).replace(b'{"x":0}', text.encode())

    assert [row.reason for row in parse(data).rejected] == [Reason.BLOB_NESTING_TOO_DEEP]


def test_deep_nesting_in_blob_context_counts() -> None:
    data = blob_bytes([track()], context={"app": nested(64)})

    assert [row.reason for row in parse(data).rejected] == [Reason.BLOB_NESTING_TOO_DEEP]


# --- determinism -------------------------------------------------------------------------------


OTHER_SOURCE = "kinesis:analytics-events:shardId-000000000001:49650000000000000000000000000777"


def test_a_retried_record_gives_the_same_quarantine_ids() -> None:
    data = blob_bytes([track("ok"), track("bad-1", userId=1), [2], track("bad-2", type="x")])

    ids = [row.quarantine_id for row in parse(data).rejected]

    assert ids == [row.quarantine_id for row in parse(data).rejected]
    assert len(set(ids)) == 3
    assert all(len(qid) == 32 for qid in ids)


def test_a_resent_blob_gives_the_same_ids_for_its_invalid_events() -> None:
    """A client resend is a new Kinesis record: same events, another source, maybe a new sentAt."""
    batch = [track("ok"), track("bad-1", userId=1), track("bad-2", type="x")]
    first = parse(blob_bytes(batch), source=SOURCE)
    copies = [blob_bytes(batch), blob_bytes(batch, sentAt="2026-11-29T12:00:05.900Z")]

    ids = {row.message_id: row.quarantine_id for row in first.rejected}
    assert ids.keys() == {"bad-1", "bad-2"}
    for copy in copies:
        resent = parse(copy, source=OTHER_SOURCE)
        assert {row.message_id: row.quarantine_id for row in resent.rejected} == ids


def test_an_invalid_event_has_one_id_wherever_it_arrives() -> None:
    bad = track("bad-1", userId=1)
    alone = parse(blob_bytes([bad])).rejected
    moved = parse(blob_bytes([track("a"), track("b"), bad], compress=True), source=OTHER_SOURCE)

    assert [row.quarantine_id for row in alone] == [row.quarantine_id for row in moved.rejected]
    payload = msgspec.json.encode(bad)
    assert alone[0].quarantine_id == event_quarantine_id(payload, "bad-1", OTHER_SOURCE, 7)


def test_another_payload_under_the_same_message_id_is_another_row() -> None:
    first = parse(blob_bytes([track("bad-1", userId=1)])).rejected
    edited = parse(blob_bytes([track("bad-1", userId=2)])).rejected

    assert [row.message_id for row in first] == [row.message_id for row in edited] == ["bad-1"]
    assert first[0].quarantine_id != edited[0].quarantine_id


def test_an_event_without_a_readable_message_id_is_keyed_on_record_and_position() -> None:
    """Nothing tells one such event sent twice from two events: a resend is a second row."""
    batch = [track("ok"), [2], track(messageId=REMOVE, type="x"), track(messageId=7, type="x")]
    data = blob_bytes(batch)

    here = parse(data).rejected
    elsewhere = parse(data, source=OTHER_SOURCE).rejected

    assert [row.message_id for row in here] == [None, None, None]
    assert [row.quarantine_id for row in here] == [
        event_quarantine_id(span, None, SOURCE, index)
        for index, span in enumerate(batch_spans(data))
        if index
    ]
    assert not {row.quarantine_id for row in here} & {row.quarantine_id for row in elsewhere}


def test_a_rejected_blob_is_keyed_on_its_bytes() -> None:
    here = parse(b"nope").rejected
    elsewhere = parse(b"nope", source=OTHER_SOURCE).rejected
    other = parse(b"nope!").rejected

    assert [row.quarantine_id for row in here] == [blob_quarantine_id(b"nope")]
    assert [row.quarantine_id for row in elsewhere] == [blob_quarantine_id(b"nope")]
    assert other[0].quarantine_id != here[0].quarantine_id
    assert is_blob_rejection(here[0])
