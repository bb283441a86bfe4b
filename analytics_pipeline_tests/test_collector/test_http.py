"""The HTTP layer against the real emulator: what the SDKs get back, and what reaches Kinesis.

Starlette's TestClient drives the app in-process; its writer talks to the session's emulator over
HTTP. Bad requests of every kind get their status and `code` and write nothing; a property test
throws arbitrary requests at the app and checks that every answer is one the SDKs understand,
that exactly the acknowledged requests are on the stream, and that the collector still answers.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from analytics_pipeline.collector.app import create_app
from analytics_pipeline.collector.auth import write_key_id
from analytics_pipeline.collector.payload import MAX_REQUEST_BYTES
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import free_port
from analytics_pipeline_testkit.traffic import read_blobs
from analytics_pipeline_tests.test_collector.helpers import (
    OTHER_WRITE_KEY,
    WRITE_KEY,
    WRITE_KEYS_SETTING,
    basic_auth,
)

AUTH = basic_auth(WRITE_KEY)


def event(**fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": uuid.uuid4().hex,
        "anonymousId": "a-1",
        "timestamp": "2026-11-29T11:59:58.001Z",
        "context": {"library": {"name": "test", "version": "1"}},
        **fields,
    }


@pytest.fixture
def client(collector_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(collector_settings)) as test_client:
        yield test_client


def message_ids(blobs: list[dict[str, Any]]) -> list[str]:
    return [e["messageId"] for blob in blobs for e in blob["batch"]]


def test_each_accepted_request_is_one_record_on_the_stream_when_200_comes(
    client: TestClient, collector_settings: Settings
) -> None:
    batch = [event() for _ in range(3)]
    single, from_body_key, browser = event(), event(), event()
    answers = [
        client.post(
            "/v1/batch", json={"batch": batch, "sentAt": "2026-11-29T12:00:00Z"}, headers=AUTH
        ),
        client.post("/v1/track", json=single, headers=AUTH),
        client.post(
            "/v1/batch",
            content=gzip.compress(
                json.dumps({"batch": [from_body_key], "writeKey": OTHER_WRITE_KEY}).encode()
            ),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        ),
        client.post(  # as analytics.js sends it: text/plain, the key in the body and the header
            "/v1/p",
            content=json.dumps({**browser, "type": "page", "name": "Home", "writeKey": WRITE_KEY}),
            headers={**AUTH, "Content-Type": "text/plain"},
        ),
    ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (200, {"success": True})
        assert answer.headers["content-type"] == "application/json"

    blobs = read_blobs(collector_settings)  # read right after the answers: already there
    assert len(blobs) == 4
    assert sorted(message_ids(blobs)) == sorted(
        e["messageId"] for e in [*batch, single, from_body_key, browser]
    )
    sources = {blob["batch"][0]["messageId"]: blob["context"]["source"] for blob in blobs}
    assert sources[from_body_key["messageId"]] == {
        "name": "other-source",
        "write_key_id": write_key_id(OTHER_WRITE_KEY),
    }
    assert sources[single["messageId"]]["name"] == "test-source"
    page = next(b for b in blobs if b["batch"][0]["messageId"] == browser["messageId"])
    assert page["batch"][0]["type"] == "page" and "writeKey" not in page["batch"][0]


@dataclass
class Bad:
    what: str
    status: int
    code: str
    route: str = "/v1/batch"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))
    body: Any = None  # bytes, a JSON value, or an iterator (sent chunked)


def bad_requests() -> list[Bad]:
    ok = {"batch": [event()]}
    raw = json.dumps(ok).encode()
    return [
        Bad("no write key", 401, "missing_write_key", headers={}, body=ok),
        Bad(
            "unknown key in the header", 401, "invalid_write_key", headers=basic_auth("x"), body=ok
        ),
        Bad(
            "unknown key in the body",
            401,
            "invalid_write_key",
            headers={},
            body={**ok, "writeKey": "x"},
        ),
        Bad("bad JSON", 400, "invalid_json", body=b'{"batch": [{"type": "track",'),
        Bad(
            "an event over 32 KB",
            400,
            "event_too_large",
            body={"batch": [event(properties={"x": "y" * 33_000})]},
        ),
        Bad(
            "a batch over 500 KB",
            400,
            "batch_too_large",
            body={"batch": [event(properties={"x": "y" * 30_000}) for _ in range(18)]},
        ),
        Bad(
            "a 500 KB batch sent chunked",
            400,
            "batch_too_large",
            body=iter([raw[:-2], b" " * MAX_REQUEST_BYTES, raw[-2:]]),
        ),
        Bad("2,501 events", 400, "too_many_events", body={"batch": [{"type": "track"}] * 2501}),
        Bad(
            "a form post",
            415,
            "unsupported_media_type",
            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
            body=raw,
        ),
        Bad(
            "multipart",
            415,
            "unsupported_media_type",
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
            body=raw,
        ),
        Bad(
            "a gzip bomb",
            400,
            "batch_too_large",
            headers={**AUTH, "Content-Encoding": "gzip"},
            body=gzip.compress(b"[" + b" " * 160_000_000 + b"]"),
        ),
        Bad(
            "brotli",
            415,
            "unsupported_encoding",
            headers={**AUTH, "Content-Encoding": "br"},
            body=raw,
        ),
        Bad("an unknown route", 404, "not_found", route="/v1/purchase", body=ok),
        Bad("a path outside /v1", 404, "not_found", route="/batch", body=ok),
        Bad("GET of a tracking route", 405, "method_not_allowed", method="GET"),
        Bad("no batch", 400, "invalid_request", body={"events": [event()]}),
        Bad("a JSON array", 400, "invalid_request", route="/v1/identify", body=[event()]),
        Bad(
            "nesting 5,000 deep",
            400,
            "nesting_too_deep",
            body=b'{"batch": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        ),
    ]


def send(client: TestClient, bad: Bad) -> Any:
    if isinstance(bad.body, bytes | Iterator):
        kwargs = {"content": bad.body}
    elif bad.body is None:
        kwargs = {}
    else:
        kwargs = {"json": bad.body}
    return client.request(bad.method, bad.route, headers=bad.headers, **kwargs)


def test_bad_requests_get_their_code_write_nothing_and_do_not_stop_the_collector(
    client: TestClient, collector_settings: Settings
) -> None:
    wrong = []
    for bad in bad_requests():
        answer = send(client, bad)
        body = answer.json()
        if (answer.status_code, body.get("code")) != (bad.status, bad.code) or not isinstance(
            body.get("message"), str
        ):
            wrong.append((bad.what, answer.status_code, body))
    assert not wrong
    assert read_blobs(collector_settings) == []
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["in_flight_bytes"] == 0
    assert client.post("/v1/batch", json={"batch": [event()]}, headers=AUTH).status_code == 200


def test_kinesis_unreachable_is_503_with_retry_after(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings.from_env(
        unique_settings_env(dead, tmp_path, ANALYTICS_WRITE_KEYS=WRITE_KEYS_SETTING)
    )
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/batch", json={"batch": [event()]}, headers=AUTH)
        assert answer.status_code == 503
        assert answer.json()["code"] == "unavailable"
        assert int(answer.headers["Retry-After"]) > 0
        assert client.get("/health").status_code == 200


def test_browsers_get_a_cors_preflight_answer(client: TestClient) -> None:
    preflight = client.options(
        "/v1/t",
        headers={
            "Origin": "http://127.0.0.1:5000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    answer = client.post("/v1/t", json=event(), headers={**AUTH, "Origin": "http://127.0.0.1:5000"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"


def test_analytics_js_settings_point_at_the_collector(client: TestClient) -> None:
    answer = client.get(f"/v1/projects/{WRITE_KEY}/settings")
    assert answer.status_code == 200
    segment = answer.json()["integrations"]["Segment.io"]
    assert segment == {"apiKey": WRITE_KEY, "apiHost": "testserver/v1", "protocol": "http"}
    assert answer.json()["metrics"]["sampleRate"] == 0
    unknown = client.get("/v1/projects/nope/settings")
    assert (unknown.status_code, unknown.json()["code"]) == (401, "invalid_write_key")


# -- property: any request ----------------------------------------------------------------------

ROUTES = ["batch", "b", "track", "t", "identify", "i", "page", "p", "screen", "s"]
ROUTES += ["group", "g", "alias", "a", "import", "m", "", "projects"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "page", "purchase"]), "messageId": st.uuids().map(str)},
    optional={
        "event": st.text(max_size=10),
        "anonymousId": st.text(max_size=10),
        "properties": JSON_VALUES,
        "writeKey": st.sampled_from([WRITE_KEY, "nope"]),
        "context": JSON_VALUES,
    },
)
BATCHES = st.fixed_dictionaries(
    {"batch": st.lists(EVENTS | JSON_VALUES, max_size=5)},
    optional={
        "writeKey": st.sampled_from([WRITE_KEY, "nope", 5]),
        "sentAt": st.sampled_from(["2026-11-29T12:00:00Z", "yesterday"]) | JSON_VALUES,
        "context": st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3) | JSON_VALUES,
    },
)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    BATCHES.map(lambda value: json.dumps(value).encode()),
    BATCHES.map(lambda value: json.dumps(value).encode()),
    EVENTS.map(lambda value: json.dumps(value).encode()),
)
# Mostly what an SDK sends, so that many requests get through to Kinesis.
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from(
            [AUTH["Authorization"]] * 4
            + [basic_auth("nope")["Authorization"], "Basic ###", "Bearer x"]
        ),
        "Content-Type": st.sampled_from(
            ["application/json"] * 3 + ["text/plain;charset=UTF-8", "text/html", "application/xml"]
        ),
        "Content-Encoding": st.sampled_from(["gzip", "identity", "deflate", "GZIP"]),
    },
)
ERROR_STATUSES = {400, 401, 404, 405, 415}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """Half of them as an SDK would send them (with arbitrary events), half anything at all."""
    if draw(st.booleans()):
        route = draw(st.sampled_from(["batch", "b"]))
        body = json.dumps(draw(BATCHES)).encode()
        headers = {**AUTH, "Content-Type": "application/json"}
        if draw(st.booleans()):
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body)
        return "POST", route, headers, body
    headers = draw(HEADERS)
    body = draw(BODIES)
    if headers.get("Content-Encoding", "").lower() == "gzip" and draw(st.booleans()):
        body = gzip.compress(body)
    method = draw(st.sampled_from(["POST"] * 5 + ["GET"]))
    return method, draw(st.sampled_from(ROUTES)), headers, body


def test_any_request_gets_an_answer_the_sdks_understand(
    client: TestClient, collector_settings: Settings
) -> None:
    acknowledged: list[int] = []  # events per 200

    @hypothesis_settings(
        max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(request=requests())
    def answer_is_understood(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, route, headers, body = request
        answer = client.request(method, f"/v1/{route}", headers=headers, content=body)
        payload = answer.json()
        if answer.status_code == 200:
            assert payload == {"success": True}
            acknowledged.append(_event_count(body, route))
        else:
            assert answer.status_code in ERROR_STATUSES, (answer.status_code, payload)
            assert set(payload) == {"code", "message"}
            assert isinstance(payload["code"], str) and isinstance(payload["message"], str)
            assert "Retry-After" not in answer.headers  # the emulator is up: nothing to retry

    answer_is_understood()
    blobs = read_blobs(collector_settings)
    assert len(blobs) == sum(1 for events in acknowledged if events)
    assert sorted(len(blob["batch"]) for blob in blobs) == sorted(n for n in acknowledged if n)
    assert client.get("/health").json()["in_flight_bytes"] == 0


def _event_count(body: bytes, route: str) -> int:
    text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
    return len(json.loads(text)["batch"]) if route in ("batch", "b") else 1
