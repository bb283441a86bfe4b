"""Kinesis throttles, fails or vanishes behind the collector; the SDKs' own retries deliver.

The collector reaches AWS through the fault proxy (`fault_proxy.py`), the trigger and the loader
go straight to the emulator. A rule refuses the first PutRecords attempts of every SDK's
records (told apart by the `context.library` inside each record) in one of three ways: per-record
`ProvisionedThroughputExceededException` (the collector answers 429 + Retry-After), a 500
`InternalFailure` (503 + Retry-After), or a dropped connection (503). All four SDKs send at once
while it does; then every messageId must be in `events` exactly once. A last scenario holds a
PutRecords that the emulator has already stored until the collector's call times out: the
retry stores the record twice, and the loader keeps one copy.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from analytics_pipeline_testkit.traffic import read_blobs
from analytics_pipeline_tests.e2e.collector_stack import CollectorStack
from analytics_pipeline_tests.e2e.fault_proxy import (
    Call,
    FaultProxy,
    Forward,
    Hold,
    Reply,
    Rule,
    json_error,
)
from analytics_pipeline_tests.e2e.sdks import (
    Call as SdkCall,
)
from analytics_pipeline_tests.e2e.sdks import (
    calls_for,
    send_browser,
    send_node,
    send_python,
)
from analytics_pipeline_tests.test_collector.helpers import WRITE_KEY

pytestmark = pytest.mark.e2e

REFUSALS_PER_SDK = 2
KINESIS_JSON = [("Content-Type", "application/x-amz-json-1.1")]


def library_of(data: str) -> tuple[str, str]:
    """(name, version) of the SDK that sent the events in one PutRecords entry."""
    blob = json.loads(gzip.decompress(base64.b64decode(data)))
    library = blob["batch"][0].get("context", {}).get("library", {})
    return library.get("name", "?"), library.get("version", "?")


class RefuseEachSdk(Rule):
    """Refuse the first `per_sdk` attempts of each SDK's records, then let them through."""

    def __init__(self, answer: str, per_sdk: int = REFUSALS_PER_SDK) -> None:
        super().__init__("PutRecords")
        self.answer = answer  # "throttle" | "error" | "drop"
        self.per_sdk = per_sdk
        self.refused: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._decisions: dict[int, list[bool]] = {}

    def matches(self, call: Call) -> bool:
        if call.operation != "PutRecords":
            return False
        with self._lock:
            libraries = [library_of(r["Data"]) for r in call.json()["Records"]]
            refuse = [self.refused[library] < self.per_sdk for library in libraries]
            if not any(refuse):
                return False
            for library, refused in zip(libraries, refuse, strict=True):
                if refused or self.answer != "throttle":  # a failed call fails all of it
                    self.refused[library] += 1
            self._decisions[id(call)] = refuse
        return True

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        refuse = self._decisions.pop(id(call))
        if self.answer == "drop":
            return None  # the connection closes unanswered: Kinesis unreachable
        if self.answer == "error":
            return json_error(500, "InternalFailure", "injected by the fault proxy")
        request = call.json()
        passing = [r for r, refused in zip(request["Records"], refuse, strict=True) if not refused]
        results: Iterator[dict[str, Any]] = iter(())
        if passing:
            reply = forward(call, json.dumps({**request, "Records": passing}).encode())
            if reply.status != 200:
                return reply
            results = iter(json.loads(reply.body)["Records"])
        throttled = {
            "ErrorCode": "ProvisionedThroughputExceededException",
            "ErrorMessage": "Rate exceeded for shard (injected by the fault proxy)",
        }
        records = [throttled if refused else next(results) for refused in refuse]
        answer = {"FailedRecordCount": sum(refuse), "Records": records}
        return Reply(200, KINESIS_JSON, json.dumps(answer).encode())


@pytest.fixture(scope="module")
def proxy(aws_endpoint: str) -> Iterator[FaultProxy]:
    running = FaultProxy(aws_endpoint).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def stack(
    aws_endpoint: str, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorStack]:
    base_dir = tmp_path_factory.mktemp("collector-faults")
    running = CollectorStack.start(aws_endpoint, base_dir, proxy.endpoint_url)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def no_faults_left(proxy: FaultProxy) -> Iterator[None]:
    yield
    proxy.clear()


def send_with_every_sdk(stack: CollectorStack, run: str) -> set[str]:
    """All four SDKs at once (Python and Node in threads, the browser here); the ids sent."""
    calls: dict[str, list[SdkCall]] = {
        sdk: calls_for(sdk, run, tracks=2)
        for sdk in ("segment-python", "rudder-python", "segment-node", "analytics.js")
    }
    ids = {call.messageId for sdk_calls in calls.values() for call in sdk_calls}
    errors: dict[str, list[str]] = {}

    def python(sdk: str) -> None:
        errors[sdk] = send_python(sdk, stack.url, WRITE_KEY, calls[sdk])

    def node() -> None:
        errors["segment-node"] = send_node(stack.url, WRITE_KEY, calls["segment-node"])

    threads = [
        threading.Thread(target=python, args=("segment-python",)),
        threading.Thread(target=python, args=("rudder-python",)),
        threading.Thread(target=node),
    ]
    for thread in threads:
        thread.start()
    browser_ids = {call.messageId for call in calls["analytics.js"]}
    send_browser(
        stack.url,
        WRITE_KEY,
        calls["analytics.js"],
        {"strategy": "standard", "config": {}},
        lambda: stack.delivered(browser_ids),
    )
    for thread in threads:
        thread.join(timeout=120)
    assert errors == {"segment-python": [], "rudder-python": [], "segment-node": []}
    return ids


@pytest.mark.parametrize(
    ("answer", "status_code"),
    [("throttle", "throttled"), ("error", "unavailable"), ("drop", "unavailable")],
)
def test_the_sdks_retries_deliver_everything_once_after_kinesis_refused_them(
    stack: CollectorStack, proxy: FaultProxy, answer: str, status_code: str
) -> None:
    before = stack.collector.health().get(status_code, 0)
    rule = proxy.add(RefuseEachSdk(answer))

    ids = send_with_every_sdk(stack, uuid.uuid4().hex[:10])
    counts = stack.wait_delivered(ids)

    assert counts == dict.fromkeys(ids, 1)
    libraries = {name for name, _ in rule.refused}
    assert libraries == {"analytics-python", "@segment/analytics-node", "analytics.js"}
    assert len(rule.refused) == 4  # both Python SDKs (by version), Node, the browser
    assert all(count >= REFUSALS_PER_SDK for count in rule.refused.values())
    refused_requests = stack.collector.health()[status_code] - before
    assert refused_requests >= 4  # every SDK got at least one 429 / 503 and came back


def test_a_put_stored_but_unanswered_is_stored_again_and_loaded_once(
    stack: CollectorStack, proxy: FaultProxy
) -> None:
    """The emulator stores the record, the answer never reaches the collector (held past its
    read timeout); botocore's retry stores it again. Two records, one row per messageId."""
    held = proxy.add(Hold("PutRecords", forward_first=True))
    calls = calls_for("segment-python", uuid.uuid4().hex[:10], tracks=2)
    ids = {call.messageId for call in calls}

    errors = send_python("segment-python", stack.url, WRITE_KEY, calls)
    held.release()
    counts = stack.wait_delivered(ids)

    assert errors == []
    assert held.held.is_set()
    copies = Counter(
        event["messageId"]
        for blob in read_blobs(stack.direct)
        for event in blob["batch"]
        if event["messageId"] in ids
    )
    assert max(copies.values()) == 2  # the held call's record is on the stream twice
    assert counts == dict.fromkeys(ids, 1)
