"""Request bodies -> blobs (pure): what is copied, what is added, what is refused and why."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics_pipeline.collector.auth import basic_auth_username, parse_write_keys, write_key_id
from analytics_pipeline.collector.payload import (
    MAX_REQUEST_BYTES,
    Payload,
    RequestRejected,
    decode_request,
    request_text,
)
from analytics_pipeline.contract import DEFAULT_LIMITS, Reason, parse_blob
from analytics_pipeline_tests.test_collector.helpers import basic_auth

SOURCE = parse_write_keys("k=web")["k"]


def event(**fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Song Played",
        "messageId": "m-1",
        "anonymousId": "a-1",
        "timestamp": "2026-11-29T11:59:58.001Z",
        "properties": {"seconds": 12},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
        **fields,
    }


def decode(body: dict[str, Any] | bytes, route: str = "batch") -> Payload:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_request(request_text(text, None, DEFAULT_LIMITS), route, DEFAULT_LIMITS)


def rejected(body: dict[str, Any] | bytes, route: str = "batch", **kwargs: Any) -> RequestRejected:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(RequestRejected) as caught:
        decode_request(
            request_text(text, kwargs.get("encoding"), DEFAULT_LIMITS), route, DEFAULT_LIMITS
        )
    return caught.value


def test_write_keys_name_sources_and_a_bare_key_is_named_by_its_hash() -> None:
    keys = parse_write_keys(" web-key = web , bare-key ,, =nokey")
    assert set(keys) == {"web-key", "bare-key"}
    assert keys["web-key"].name == "web"
    assert keys["bare-key"].name == write_key_id("bare-key")
    for key, source in keys.items():
        assert key.encode() not in source.context_json  # the key itself is never stored
        assert json.loads(source.context_json) == {
            "name": source.name,
            "write_key_id": write_key_id(key),
        }


def test_the_write_key_is_the_basic_auth_username() -> None:
    assert basic_auth_username(basic_auth("abc")["Authorization"]) == "abc"
    assert basic_auth_username("basic " + basic_auth("abc")["Authorization"][6:]) == "abc"
    for header in (None, "", "Bearer abc", "Basic !!!", "Basic " + "OjE=", "Basic /w=="):
        assert basic_auth_username(header) is None, header


def test_a_batch_becomes_one_blob_with_its_events_copied_byte_for_byte() -> None:
    events = [event(messageId=f"m-{n}") for n in range(3)]
    text = json.dumps({"batch": events, "sentAt": "2026-11-29T12:00:05.120Z"}).encode()
    payload = decode(text)
    blob = json.loads(payload.blob(SOURCE))
    assert blob["sentAt"] == "2026-11-29T12:00:05.120Z"
    assert blob["context"] == {"source": {"name": "web", "write_key_id": write_key_id("k")}}
    assert blob["batch"] == events
    for raw in payload.events:  # not re-encoded: the SDK's bytes, spaces included
        assert bytes(raw) in text


def test_the_request_context_is_kept_and_source_cannot_be_claimed_by_the_client() -> None:
    payload = decode(
        {
            "batch": [event(context={"library": {"name": "x"}, "source": {"name": "forged"}})],
            "context": {"app": {"name": "demo"}, "source": "forged too"},
        }
    )
    blob = json.loads(payload.blob(SOURCE))
    assert blob["context"] == {"app": {"name": "demo"}, "source": json.loads(SOURCE.context_json)}
    assert blob["batch"][0]["context"] == {"library": {"name": "x"}}


def test_write_keys_inside_events_are_not_kept() -> None:
    """analytics.js puts `writeKey` into every event; a quarantined payload must not keep it."""
    payload = decode({"writeKey": "k", "batch": [event(writeKey="k"), event(messageId="m-2")]})
    assert payload.write_key == "k"
    assert b"writeKey" not in payload.blob(SOURCE)
    assert json.loads(payload.blob(SOURCE))["batch"][1] == event(messageId="m-2")


@pytest.mark.parametrize(
    ("route", "event_type"),
    [
        ("track", "track"),
        ("t", "track"),
        ("page", "page"),
        ("p", "page"),
        ("s", "screen"),
        ("identify", "identify"),
        ("g", "group"),
        ("alias", "alias"),
    ],
)
def test_a_single_event_route_gives_the_type(route: str, event_type: str) -> None:
    payload = decode({**event(type="whatever"), "writeKey": "k", "sentAt": "x"}, route)
    assert payload.write_key == "k"
    blob = json.loads(payload.blob(SOURCE))
    assert "sentAt" not in blob  # the event's own sentAt stays on the event
    assert blob["batch"] == [{**event(type=event_type), "sentAt": "x"}]


def test_the_lambda_reads_the_blob_as_it_reads_the_sdk_blobs() -> None:
    """The contract's parser, unchanged, finds the source, the library and the timestamps."""
    payload = decode({"batch": [event(), event(messageId="m-2", type="screen", name="Feed")]})
    received_at = datetime(2026, 11, 29, 12, 0, 6, tzinfo=UTC)
    result = parse_blob(
        payload.blob(SOURCE), received_at=received_at, source="kinesis:test", limits=DEFAULT_LIMITS
    )
    assert not result.rejected
    track, screen = result.accepted
    assert (track.message_id, track.event, screen.event) == ("m-1", "Song Played", "Feed")
    assert track.timestamp == datetime(2026, 11, 29, 11, 59, 58, 1000, tzinfo=UTC)
    context = json.loads(bytes(track.context))
    assert context["library"] == {"name": "analytics-python", "version": "2.4.0"}
    assert context["source"]["name"] == "web"


def test_gzip_is_read_by_header_or_by_magic_bytes() -> None:
    text = json.dumps({"batch": [event()]}).encode()
    assert request_text(gzip.compress(text), "gzip", DEFAULT_LIMITS) == text
    assert request_text(gzip.compress(text), None, DEFAULT_LIMITS) == text
    assert request_text(text, "identity", DEFAULT_LIMITS) == text


@pytest.mark.parametrize(
    ("body", "encoding", "status", "code"),
    [
        (b'{"batch": []}', "gzip", 400, "invalid_gzip"),  # says gzip, is not
        (b"\x1f\x8b\x08\x00garbage", None, 400, "invalid_gzip"),
        (gzip.compress(b"{}")[:-6], "gzip", 400, "invalid_gzip"),  # truncated
        (gzip.compress(b" " * 50_000_000), "gzip", 400, "batch_too_large"),  # a gzip bomb
        (b'{"batch": []}', "br", 415, "unsupported_encoding"),
        (b" " * (MAX_REQUEST_BYTES + 1), None, 400, "batch_too_large"),
        (b'{"batch": ["\xff\xfe"]}', None, 400, "invalid_json"),
    ],
)
def test_bodies_that_cannot_be_read(body: bytes, encoding: str, status: int, code: str) -> None:
    with pytest.raises(RequestRejected) as caught:
        request_text(body, encoding, DEFAULT_LIMITS)
    assert (caught.value.status, caught.value.code) == (status, code)


@pytest.mark.parametrize(
    ("body", "route", "code"),
    [
        (b"{nope", "batch", "invalid_json"),
        (b'{"batch": [1,]}', "batch", "invalid_json"),
        (b"[]", "batch", "invalid_request"),
        (b'{"sentAt": "x"}', "batch", "invalid_request"),  # no batch
        (b'{"batch": {"0": {}}}', "batch", "invalid_request"),
        (b'{"batch": [], "context": 7}', "batch", "invalid_request"),
        (b'{"batch": [], "sentAt": 1}', "batch", "invalid_request"),
        (b'"an event"', "track", "invalid_request"),
        (b'{"batch": [' + b"[" * 10_000 + b"]" * 10_000 + b"]}", "batch", "nesting_too_deep"),
        (b'{"properties": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "track", "nesting_too_deep"),
    ],
)
def test_requests_refused_whole(body: bytes, route: str, code: str) -> None:
    assert rejected(body, route).code == code


def test_the_batch_limits_are_the_contracts() -> None:
    too_many = {"batch": [{}] * (DEFAULT_LIMITS.max_events_per_blob + 1)}
    assert rejected(too_many).code == "too_many_events"
    assert len(decode({"batch": [{}] * DEFAULT_LIMITS.max_events_per_blob}).events) == 2500
    big = event(properties={"text": "x" * DEFAULT_LIMITS.max_event_bytes})
    error = rejected({"batch": [event(), big]})
    assert (error.status, error.code) == (400, "event_too_large")
    assert "event 1 of the batch" in error.message
    assert rejected(big, "track").code == "event_too_large"


def test_events_the_lambda_must_judge_pass_through() -> None:
    """Per-event problems are the Lambda's to quarantine, with their reason codes."""
    payload = decode({"batch": ["not an object", {"type": "purchase"}, event(writeKey=5)]})
    assert [bytes(raw) for raw in payload.events[:2]] == [
        b'"not an object"',
        b'{"type": "purchase"}',
    ]
    assert payload.write_key is None


def test_nesting_over_the_contract_limit_is_left_to_the_lambda() -> None:
    """Readable JSON deeper than the contract's limit passes; the Lambda quarantines the blob."""
    payload = decode({"batch": [event(properties={"deep": json.loads("[" * 70 + "]" * 70)})]})
    received_at = datetime(2026, 11, 29, 12, 0, 6, tzinfo=UTC)
    result = parse_blob(payload.blob(SOURCE), received_at=received_at, source="kinesis:test")
    assert [row.reason for row in result.rejected] == [Reason.BLOB_NESTING_TOO_DEEP.value]


def test_a_body_naming_the_key_once_copies_every_event_untouched() -> None:
    """The SDKs' usual body (`writeKey` at the top, a campaign `source` in events): no event
    is re-encoded unless it holds a key the collector must drop."""
    campaign = {"library": {"name": "x"}, "campaign": {"source": "newsletter"}}
    text = json.dumps({"writeKey": "k", "batch": [event(context=campaign)] * 2}).encode()
    payload = decode(text)
    assert payload.write_key == "k"
    assert all(bytes(raw) in text for raw in payload.events)
    assert json.loads(payload.blob(SOURCE))["batch"][0]["context"] == campaign


def test_an_empty_batch_has_nothing_to_write() -> None:
    assert decode({"batch": []}).events == []
