"""The bad-input catalogue: malformed and hostile client blobs, each with its expected outcome.

One entry = one Kinesis record (a client blob). `outcomes` lists, in batch order, what becomes of
each event: `ACCEPTED` (loaded into `events`, verbatim where `stored` says so) or a `Reason` code
(a row in `events_quarantine`); a blob rejected whole has `blob_level=True` and one reason.

The same data drives the fast tests (parse_blob and the Lambda handler with doubles,
`test_catalogue.py`), the end-to-end test through the real stack
(`e2e/test_catalogue_e2e.py`) and the README table (`readme_table()`, kept in step by a test).

Builders take a `Build` (the arrival time and a tag that makes messageIds unique per run), so the
same entry works in a unit test with a fixed clock and in the e2e test against the wall clock.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.contract.reasons import Reason
from analytics_pipeline_testkit.blobs import batch_spans

ACCEPTED = "accepted"
LIMITS = Limits()  # the documented defaults; the catalogue is judged against them

SQL_EVENT_NAME = "'); DROP TABLE analytics.events; --"
SQL_PROPERTY_KEYS = {
    'x" FROM analytics.events; DROP TABLE analytics.loaded_batches; --': 1,
    "'; DELETE FROM analytics.events WHERE '1'='1": "yes",
    "`backticks` [brackets] $1 ? :name %s": True,
}
CONTROL_STRING = "nul:\x00 bell:\x07 esc:\x1b tab:\t newline:\n del:\x7f end"
UNICODE_STRING = "emoji \U0001f600 rtl \u05e9\u05dc\u05d5\u05dd zero-width\u200b combining e\u0301"


@dataclass(frozen=True)
class Build:
    """What a builder may depend on: when the blob arrives, and a per-run tag for messageIds."""

    now: datetime
    tag: str

    def message_id(self, entry: str, index: int = 0) -> str:
        return f"{self.tag}-{entry}-{index}"

    def iso(self, moment: datetime) -> str:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def event(self, entry: str, index: int = 0, /, **fields: Any) -> dict[str, Any]:
        """A valid track event; keyword arguments override fields (`DROP` removes one)."""
        event: dict[str, Any] = {
            "type": "track",
            "event": "Catalogue Probe",
            "messageId": self.message_id(entry, index),
            "anonymousId": f"{self.tag}-device",
            "originalTimestamp": self.iso(self.now - timedelta(seconds=5)),
            "properties": {"entry": entry},
        }
        event.update(fields)
        return {key: value for key, value in event.items() if value is not DROP}

    def blob_text(self, batch: Any, **blob_fields: Any) -> bytes:
        blob: dict[str, Any] = {
            "sentAt": self.iso(self.now - timedelta(seconds=1)),
            "context": {"library": {"name": "catalogue"}},
            "batch": batch,
        }
        blob.update(blob_fields)
        blob = {key: value for key, value in blob.items() if value is not DROP}
        return json.dumps(blob, ensure_ascii=False).encode()

    def blob(self, batch: Any, **blob_fields: Any) -> bytes:
        return gzip.compress(self.blob_text(batch, **blob_fields), compresslevel=6, mtime=0)


DROP: Any = object()
_IST = timezone(timedelta(hours=5, minutes=30))
Builder = Callable[[Build], bytes]


@dataclass(frozen=True)
class BadInput:
    name: str
    what: str  # one line for the README
    build: Builder
    outcomes: tuple[str, ...]
    blob_level: bool = False
    # Accepted events only: column -> the value the warehouse must hold (JSON columns as objects).
    stored: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outcome_text(self) -> str:
        if self.blob_level:
            return f"blob quarantined: `{self.outcomes[0]}`"
        texts = [
            "accepted verbatim" if outcome == ACCEPTED else f"quarantined: `{outcome}`"
            for outcome in self.outcomes
        ]
        return ", ".join(dict.fromkeys(texts))


def _one(entry: str, /, **fields: Any) -> Builder:
    """A blob with one event whose fields are overridden."""
    return lambda b: b.blob([b.event(entry, **fields)])


def _raw_event(name: str, replace: tuple[bytes, bytes]) -> Builder:
    """A blob with one event, edited as bytes (for what json.dumps cannot write)."""

    def build(b: Build) -> bytes:
        text = b.blob_text([b.event(name)])
        old, new = replace
        assert old in text, (old, text)
        return gzip.compress(text.replace(old, new, 1), mtime=0)

    return build


@cache
def _gzip_bomb(decompressed_bytes: int) -> bytes:
    return gzip.compress(b"{" + b" " * decompressed_bytes, compresslevel=9, mtime=0)


@cache
def _tiny_elements(count: int) -> bytes:
    return gzip.compress(b'{"batch":[' + b"0," * (count - 1) + b"0]}", mtime=0)


def _nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _deep_text(b: Build, name: str, depth: int) -> bytes:
    # json.dumps recurses; build the text directly. Blob = 1, batch = 2, event = 3, so the
    # properties object sits at depth 4 and `depth` counts the whole document.
    inner = depth - 3
    properties = '{"a":' * (inner - 1) + "{}" + "}" * (inner - 1)
    event = json.dumps(b.event(name, properties=None))
    return (
        b.blob_text([])
        .replace(b'"batch": []', b'"batch": [' + event.encode() + b"]")
        .replace(b'"properties": null', b'"properties": ' + properties.encode())
    )


def _over_blob_limit(b: Build) -> bytes:
    # Incompressible text, sent plain: over ANALYTICS_MAX_BLOB_BYTES as a Kinesis record.
    filler = (b.tag * 40_000)[: LIMITS.max_blob_bytes]
    noise = "".join(f"{(i * 2654435761) % 2**32:08x}" for i in range(LIMITS.max_blob_bytes // 8))
    return b.blob_text([b.event("blob_over_size_limit", properties={"f": filler, "n": noise})])


def _wrong_type(field_name: str, value: Any, reason: Reason) -> BadInput:
    name = f"wrong_type_{field_name}"
    return BadInput(
        name,
        f"`{field_name}` as JSON {type(value).__name__}: {json.dumps(value)}",
        _one(name, **{field_name: value}),
        (reason,),
    )


def _entries() -> list[BadInput]:
    day = timedelta(days=1)
    return [
        # --- whole blobs nothing can be read from -----------------------------------------
        BadInput(
            "not_json",
            "bytes that are not JSON",
            lambda b: b"\x00not json{",
            ("blob_not_json",),
            True,
        ),
        BadInput(
            "whitespace_only", "a record of spaces", lambda b: b"    ", ("blob_not_json",), True
        ),
        BadInput(
            "trailing_garbage",
            "a valid blob followed by more text",
            lambda b: b.blob_text([b.event("trailing_garbage")]) + b" {}",
            ("blob_not_json",),
            True,
        ),
        BadInput(
            "utf8_bom",
            "a UTF-8 byte-order mark before the JSON",
            lambda b: b"\xef\xbb\xbf" + b.blob_text([b.event("utf8_bom")]),
            ("blob_not_json",),
            True,
        ),
        BadInput(
            "nan_literal",
            "a `NaN` literal in properties",
            _raw_event("nan_literal", (b'"properties": {', b'"properties": {"x": NaN, ')),
            ("blob_not_json",),
            True,
        ),
        BadInput(
            "infinity_literal",
            "`Infinity` / `-Infinity` literals",
            _raw_event(
                "infinity_literal", (b'"properties": {', b'"properties": {"x": -Infinity, ')
            ),
            ("blob_not_json",),
            True,
        ),
        BadInput(
            "truncated_gzip",
            "a gzip stream cut short",
            lambda b: b.blob([b.event("truncated_gzip")])[:-12],
            ("blob_gzip_invalid",),
            True,
        ),
        BadInput(
            "corrupt_gzip",
            "gzip magic bytes followed by garbage",
            lambda b: b"\x1f\x8b\x08\x00garbage that is not deflate",
            ("blob_gzip_invalid",),
            True,
        ),
        BadInput(
            "gzip_trailing_bytes",
            "a gzip member followed by bytes that are not another member",
            lambda b: b.blob([b.event("gzip_trailing_bytes")]) + b"tail",
            ("blob_gzip_invalid",),
            True,
        ),
        BadInput(
            "gzip_bomb",
            "160 KB of gzip that inflates to 160 MB (only cap + 1 bytes are ever inflated)",
            lambda b: _gzip_bomb(160 * 2**20),
            ("blob_decompressed_too_large",),
            True,
        ),
        BadInput(
            "invalid_utf8",
            "bytes 0xFF 0xFE inside a string",
            _raw_event("invalid_utf8", (b'"Catalogue Probe"', b'"Catalogue \xff\xfe Probe"')),
            ("blob_invalid_utf8",),
            True,
        ),
        BadInput(
            "encoded_surrogate",
            "a UTF-16 surrogate encoded as UTF-8 bytes (CESU-8)",
            _raw_event("encoded_surrogate", (b'"Catalogue Probe"', b'"\xed\xa0\x80"')),
            ("blob_invalid_utf8",),
            True,
        ),
        BadInput(
            "lone_surrogate_escape",
            "a `\\ud800` escape: JSON grammar allows it, Unicode has no such character",
            _raw_event(
                "lone_surrogate_escape", (b'"properties": {', b'"properties": {"s": "\\ud800", ')
            ),
            ("blob_not_json",),
            True,
        ),
        BadInput(
            "nesting_10000_deep",
            "properties nested 10,000 levels deep",
            lambda b: gzip.compress(_deep_text(b, "nesting_10000_deep", 10_000), mtime=0),
            ("blob_nesting_too_deep",),
            True,
        ),
        BadInput(
            "nesting_over_limit",
            f"nesting one level over the limit ({LIMITS.max_nesting_depth + 1})",
            lambda b: _deep_text(b, "nesting_over_limit", LIMITS.max_nesting_depth + 1),
            ("blob_nesting_too_deep",),
            True,
        ),
        BadInput(
            "blob_top_level_array",
            "a JSON array instead of the blob object",
            lambda b: json.dumps([b.event("blob_top_level_array")]).encode(),
            ("blob_invalid_shape",),
            True,
        ),
        BadInput(
            "batch_not_a_list",
            "`batch` is an object",
            lambda b: b.blob({"0": b.event("batch_not_a_list")}),
            ("blob_invalid_shape",),
            True,
        ),
        BadInput(
            "batch_missing",
            "no `batch` field",
            lambda b: b.blob(DROP),
            ("blob_invalid_shape",),
            True,
        ),
        BadInput(
            "blob_sent_at_not_a_time",
            "blob `sentAt` is not a timestamp",
            lambda b: b.blob([b.event("blob_sent_at_not_a_time")], sentAt="now-ish"),
            ("blob_invalid_shape",),
            True,
        ),
        BadInput(
            "events_100000",
            "100,000 events in one blob",
            lambda b: b.blob([{"type": "track"}] * 100_000),
            ("blob_too_many_events",),
            True,
        ),
        BadInput(
            "tiny_elements_4m",
            "4 million `0` elements in 8 MiB (counted before they are decoded)",
            lambda b: _tiny_elements((LIMITS.max_decompressed_bytes - 20) // 2),
            ("blob_too_many_events",),
            True,
        ),
        BadInput(
            "blob_over_size_limit",
            "a 1.1 MB record (real Kinesis refuses records over 1 MiB; moto accepts them)",
            _over_blob_limit,
            ("blob_too_large",),
            True,
        ),
        # --- one event rejected, its siblings go on ----------------------------------------
        BadInput(
            "event_not_object",
            "batch elements that are a string, a number, null and an array",
            lambda b: b.blob(["event", 42, None, [b.event("event_not_object")]]),
            ("event_not_object",) * 4,
        ),
        BadInput(
            "event_over_size_limit",
            f"an event over {LIMITS.max_event_bytes} bytes beside a valid one",
            lambda b: b.blob(
                [
                    b.event("event_over_size_limit", 0, properties={"x": "y" * 40_000}),
                    b.event("event_over_size_limit", 1),
                ]
            ),
            ("event_too_large", ACCEPTED),
        ),
        BadInput(
            "unknown_type",
            "`type: purchase`",
            _one("unknown_type", type="purchase"),
            ("invalid_type",),
        ),
        BadInput("type_missing", "no `type`", _one("type_missing", type=DROP), ("invalid_type",)),
        BadInput(
            "type_wrong_case",
            "`type: Track`",
            _one("type_wrong_case", type="Track"),
            ("invalid_type",),
        ),
        BadInput(
            "message_id_missing",
            "no `messageId`",
            _one("message_id_missing", messageId=DROP),
            ("missing_message_id",),
        ),
        BadInput(
            "message_id_empty",
            '`messageId: ""`',
            _one("message_id_empty", messageId=""),
            ("missing_message_id",),
        ),
        BadInput(
            "message_id_overlong",
            f"a messageId of {LIMITS.max_message_id_chars + 1} characters",
            lambda b: b.blob(
                [b.event("message_id_overlong", messageId="m" * (LIMITS.max_message_id_chars + 1))]
            ),
            ("message_id_too_long",),
        ),
        BadInput(
            "no_identity",
            "neither userId nor anonymousId",
            _one("no_identity", anonymousId=DROP),
            ("missing_identity",),
        ),
        BadInput(
            "empty_identity",
            "userId and anonymousId both empty strings",
            _one("empty_identity", anonymousId="", userId=""),
            ("missing_identity",),
        ),
        BadInput(
            "track_without_event",
            "a track without `event`",
            _one("track_without_event", event=DROP),
            ("missing_event_name",),
        ),
        _wrong_type("type", 1, Reason.INVALID_FIELD_TYPE),
        _wrong_type("event", 123, Reason.INVALID_FIELD_TYPE),
        _wrong_type("name", ["Feed"], Reason.INVALID_FIELD_TYPE),
        _wrong_type("messageId", 12345, Reason.INVALID_FIELD_TYPE),
        _wrong_type("userId", 42, Reason.INVALID_FIELD_TYPE),
        _wrong_type("anonymousId", True, Reason.INVALID_FIELD_TYPE),
        _wrong_type("groupId", {"id": 1}, Reason.INVALID_FIELD_TYPE),
        _wrong_type("previousId", 1.5, Reason.INVALID_FIELD_TYPE),
        _wrong_type("timestamp", 1764417600, Reason.INVALID_TIMESTAMP),
        _wrong_type("originalTimestamp", ["2026-11-29"], Reason.INVALID_TIMESTAMP),
        _wrong_type("sentAt", {"at": "now"}, Reason.INVALID_TIMESTAMP),
        _wrong_type("properties", [1, 2], Reason.INVALID_FIELD_TYPE),
        _wrong_type("traits", "pro", Reason.INVALID_FIELD_TYPE),
        _wrong_type("context", 7, Reason.INVALID_FIELD_TYPE),
        BadInput(
            "timestamp_words",
            "`originalTimestamp: yesterday`",
            _one("timestamp_words", originalTimestamp="yesterday"),
            ("invalid_timestamp",),
        ),
        BadInput(
            "timestamp_us_format",
            "`originalTimestamp: 11/29/2026 10:00`",
            _one("timestamp_us_format", originalTimestamp="11/29/2026 10:00"),
            ("invalid_timestamp",),
        ),
        BadInput(
            "timestamp_month_13",
            "`timestamp: 2026-13-01T00:00:00Z`",
            _one("timestamp_month_13", timestamp="2026-13-01T00:00:00Z"),
            ("invalid_timestamp",),
        ),
        BadInput(
            "timestamp_far_future",
            "an explicit `timestamp` in the year 2075",
            lambda b: b.blob([b.event("timestamp_far_future", timestamp="2075-01-01T00:00:00Z")]),
            ("timestamp_in_future",),
        ),
        BadInput(
            "timestamp_just_past_tolerance",
            "a `timestamp` the future tolerance plus a minute ahead",
            lambda b: b.blob(
                [
                    b.event(
                        "timestamp_just_past_tolerance",
                        timestamp=b.iso(
                            b.now + timedelta(seconds=LIMITS.future_tolerance_seconds + 60)
                        ),
                    )
                ]
            ),
            ("timestamp_in_future",),
        ),
        BadInput(
            "timestamp_too_old",
            f"a `timestamp` {LIMITS.late_arrival_days + 1} days before arrival",
            lambda b: b.blob(
                [
                    b.event(
                        "timestamp_too_old",
                        timestamp=b.iso(b.now - (LIMITS.late_arrival_days + 1) * day),
                    )
                ]
            ),
            ("timestamp_too_old",),
        ),
        BadInput(
            "timestamp_year_1",
            "`originalTimestamp: 0001-01-01T00:00:00Z`",
            _one("timestamp_year_1", originalTimestamp="0001-01-01T00:00:00Z"),
            ("timestamp_too_old",),
        ),
        # --- odd but valid: stored verbatim --------------------------------------------------
        BadInput(
            "control_characters",
            "NUL, BEL, ESC, DEL and newlines in the event name and a property",
            _one("control_characters", event=CONTROL_STRING, properties={"v": CONTROL_STRING}),
            (ACCEPTED,),
            stored={"event": CONTROL_STRING, "properties": {"v": CONTROL_STRING}},
        ),
        BadInput(
            "sql_looking_names",
            "SQL-looking event name and property keys",
            _one("sql_looking_names", event=SQL_EVENT_NAME, properties=SQL_PROPERTY_KEYS),
            (ACCEPTED,),
            stored={"event": SQL_EVENT_NAME, "properties": SQL_PROPERTY_KEYS},
        ),
        BadInput(
            "duplicate_keys",
            "`event` given twice (the last one wins, as in JavaScript)",
            _raw_event(
                "duplicate_keys",
                (b'"event": "Catalogue Probe"', b'"event": "first", "event": "second"'),
            ),
            (ACCEPTED,),
            stored={"event": "second"},
        ),
        BadInput(
            "unicode",
            "emoji, right-to-left text, zero-width and combining characters",
            _one("unicode", event=UNICODE_STRING, properties={UNICODE_STRING: UNICODE_STRING}),
            (ACCEPTED,),
            stored={"event": UNICODE_STRING, "properties": {UNICODE_STRING: UNICODE_STRING}},
        ),
        BadInput(
            "nesting_at_limit",
            f"nesting exactly at the limit ({LIMITS.max_nesting_depth})",
            lambda b: _deep_text(b, "nesting_at_limit", LIMITS.max_nesting_depth),
            (ACCEPTED,),
            stored={"properties": _nested(LIMITS.max_nesting_depth - 3)},
        ),
        BadInput(
            "timestamp_with_offset",
            "a `timestamp` with a +05:30 offset (stored in UTC)",
            lambda b: b.blob(
                [
                    b.event(
                        "timestamp_with_offset",
                        timestamp=(b.now - timedelta(minutes=1))
                        .astimezone(_IST)
                        .isoformat(timespec="milliseconds"),
                    )
                ]
            ),
            (ACCEPTED,),
        ),
    ]


CATALOGUE: tuple[BadInput, ...] = tuple(_entries())
BY_NAME: dict[str, BadInput] = {entry.name: entry for entry in CATALOGUE}
assert len(BY_NAME) == len(CATALOGUE), "catalogue names must be unique"


def readme_table() -> str:
    """The README's bad-input table, generated from the catalogue."""
    lines = ["| input | what | outcome |", "|---|---|---|"]
    for entry in CATALOGUE:
        what = entry.what.replace("|", "\\|")
        lines.append(f"| `{entry.name}` | {what} | {entry.outcome_text} |")
    return "\n".join(lines)


def event_positions(blob: bytes) -> dict[bytes, int]:
    """Each batch element's exact bytes -> its index in the blob (event-level entries only).

    A quarantine id is keyed on the event's content when it has a messageId, so it no longer
    says where the event was; the row's payload (the element's bytes, verbatim) still does.
    """
    spans = batch_spans(blob)
    positions = {span: index for index, span in enumerate(spans)}
    assert len(positions) == len(spans), "identical events in one entry: positions are ambiguous"
    return positions
