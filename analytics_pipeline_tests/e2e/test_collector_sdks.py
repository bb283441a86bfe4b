"""Four SDKs no one here wrote, pointed at the collector, through the whole pipeline to DuckDB.

segment-analytics-python, rudder-sdk-python (gzip by default), @segment/analytics-node and
analytics.js (@segment/analytics-next in headless chromium, both of its delivery strategies),
each configured with nothing but the collector's host and a write key. Every event type each
sends must be in `events` exactly once, mapped as Segment's warehouses map it: page and screen
names in `event`, traits, properties, the SDK's `context.library` and the source of the key.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import pytest

from analytics_pipeline.collector.auth import write_key_id
from analytics_pipeline_tests.e2e.collector_stack import CollectorStack
from analytics_pipeline_tests.e2e.sdks import (
    JS_DIR,
    Call,
    calls_for,
    send_browser,
    send_node,
    send_python,
)
from analytics_pipeline_tests.test_collector.helpers import WRITE_KEY

pytestmark = pytest.mark.e2e

STRATEGIES = {
    "standard": {"strategy": "standard", "config": {}},  # one request per event: /v1/t, /v1/p...
    "batching": {"strategy": "batching", "config": {"size": 4, "timeout": 300}},  # /v1/b
}


def node_version() -> str:
    package = JS_DIR / "node_modules/@segment/analytics-node/package.json"
    return json.loads(package.read_text())["version"]


LIBRARIES = {
    "segment-python": ("analytics-python", lambda: version("segment-analytics-python")),
    "rudder-python": ("analytics-python", lambda: version("rudder-sdk-python")),
    "segment-node": ("@segment/analytics-node", node_version),
    "analytics.js": ("analytics.js", lambda: "1.84.3"),  # the installed analytics-next
}


@pytest.fixture(scope="module")
def stack(aws_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorStack]:
    running = CollectorStack.start(aws_endpoint, tmp_path_factory.mktemp("sdks"), aws_endpoint)
    try:
        yield running
    finally:
        running.stop()


def send(stack: CollectorStack, sdk: str, calls: list[Call]) -> dict[str, Any]:
    """Send through `sdk` ("analytics.js/<strategy>" for the browser); what the SDK reported."""
    ids = {call.messageId for call in calls}
    if sdk.startswith("analytics.js"):
        strategy = STRATEGIES[sdk.split("/")[1]]
        return send_browser(stack.url, WRITE_KEY, calls, strategy, lambda: stack.delivered(ids))
    if sdk == "segment-node":
        return {"errors": send_node(stack.url, WRITE_KEY, calls)}
    return {"errors": send_python(sdk, stack.url, WRITE_KEY, calls)}


@pytest.mark.parametrize(
    "sdk",
    [
        "segment-python",
        "rudder-python",
        "segment-node",
        "analytics.js/standard",
        "analytics.js/batching",
    ],
)
def test_every_event_type_arrives_once_mapped_as_segment_maps_it(
    stack: CollectorStack, sdk: str
) -> None:
    run = uuid.uuid4().hex[:10]
    calls = calls_for(sdk.split("/")[0], run)
    started = datetime.now(UTC) - timedelta(seconds=1)
    reported = send(stack, sdk, calls)
    ids = {call.messageId for call in calls}

    counts = stack.wait_delivered(ids)

    assert reported.get("errors", []) == []
    assert counts == dict.fromkeys(ids, 1)
    rows = stack.rows(ids)
    library_name, library_version = LIBRARIES[sdk.split("/")[0]]
    for call in calls:
        row = rows[call.messageId]
        assert row["type"] == call.type
        assert row["event"] == {"track": call.event, "page": call.name, "screen": call.name}.get(
            call.type
        )
        assert row["user_id"] == call.userId
        assert row["group_id"] == call.groupId
        assert row["previous_id"] == call.previousId
        properties = json.loads(row["properties"] or "null") or {}
        traits = json.loads(row["traits"] or "null") or {}
        assert (call.properties or {}).items() <= properties.items(), (call, properties)
        context = json.loads(row["context"])
        if sdk == "rudder-python" and call.type == "identify":
            # RudderStack's SDKs send identify traits as `context.traits` only; Segment's
            # warehouses keep those as context (context_traits_*), and so does `events`.
            traits = context["traits"]
        assert (call.traits or {}).items() <= traits.items(), (call, traits)
        assert context["library"]["name"] == library_name
        assert library_version() in context["library"]["version"]
        assert context["source"] == {"name": "test-source", "write_key_id": write_key_id(WRITE_KEY)}
        # The SDK's own `timestamp` (the time of the call) is kept; sentAt is the SDK's too.
        timestamp = row["timestamp"].replace(tzinfo=UTC)
        received_at = row["received_at"].replace(tzinfo=UTC)
        assert started <= timestamp <= received_at + timedelta(seconds=5)
        assert row["sent_at"] is not None
    if sdk.startswith("analytics.js"):
        browser_checks(stack, reported, sdk.split("/")[1], rows)


def browser_checks(
    stack: CollectorStack, reported: dict[str, Any], strategy: str, rows: dict[str, Any]
) -> None:
    """No request left 127.0.0.1 (no CDN); settings came from the collector; the events went to
    the routes of the strategy, cross-origin with an Authorization header (CORS preflight)."""
    collector = urlsplit(stack.url).netloc
    hosts = {urlsplit(url).hostname for _, url in (r.split(" ", 1) for r in reported["requests"])}
    assert hosts == {"127.0.0.1"}, reported["requests"]
    paths = [
        (method, urlsplit(url).path)
        for method, url in (r.split(" ", 1) for r in reported["requests"])
        if urlsplit(url).netloc == collector
    ]
    assert ("GET", f"/v1/projects/{WRITE_KEY}/settings") in paths
    posted = {path for method, path in paths if method == "POST"}
    expected = {"/v1/b"} if strategy == "batching" else {f"/v1/{t[0]}" for t in "tpsiga"}
    assert posted == expected, paths
    assert {row["anonymous_id"] for row in rows.values()} == {reported["anonymousId"]}


def test_an_unknown_write_key_is_refused_once_and_not_retried(stack: CollectorStack) -> None:
    """401 with a `code`: each SDK gives up at once instead of retrying ten times."""
    before = stack.collector.health().get("invalid_write_key", 0)
    calls = calls_for("bad-key", uuid.uuid4().hex[:10], tracks=1)[-1:]
    segment_errors = send_python("segment-python", stack.url, "not-a-key", calls)
    rudder_errors = send_python("rudder-python", stack.url, "not-a-key", calls)
    node_errors = send_node(stack.url, "not-a-key", calls)
    assert len(segment_errors) == len(rudder_errors) == len(node_errors) == 1
    assert "invalid_write_key" in segment_errors[0] and "invalid_write_key" in rudder_errors[0]
    assert stack.collector.health()["invalid_write_key"] - before == 3
