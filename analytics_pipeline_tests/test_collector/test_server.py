"""The collector as it runs: `analytics-pipeline collector` (uvicorn) on 127.0.0.1, real sockets.

Slow and broken clients must cost the collector nothing but a connection: a body trickled in
gets 408 once the read timeout passes, a client that hangs up mid-body writes nothing, idle and
half-open connections do not hold anyone else up. The in-flight bound is shown with the fault
proxy holding a PutRecords call: the next request that would exceed it gets 503 + Retry-After.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analytics_pipeline.local.bootstrap import ensure_resources
from analytics_pipeline.settings import Settings
from analytics_pipeline_testkit.environments import unique_settings_env
from analytics_pipeline_testkit.processes import CollectorServer, is_loopback, listening_addresses
from analytics_pipeline_testkit.traffic import read_blobs
from analytics_pipeline_tests.e2e.fault_proxy import FaultProxy, Hold
from analytics_pipeline_tests.test_collector.helpers import (
    WRITE_KEY,
    WRITE_KEYS_SETTING,
    basic_auth,
)

pytestmark = pytest.mark.e2e

READ_TIMEOUT_SECONDS = 1.5


def batch_body(events: int = 2) -> bytes:
    return json.dumps(
        {
            "batch": [
                {"type": "track", "event": "E", "messageId": uuid.uuid4().hex, "anonymousId": "a"}
                for _ in range(events)
            ]
        }
    ).encode()


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{url}/v1/batch",
        data=body,
        headers={**basic_auth(WRITE_KEY), "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status, headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        headers = {name.lower(): value for name, value in error.headers.items()}
        return error.code, headers, json.loads(error.read())


@pytest.fixture
def server(collector_settings: Settings, tmp_path: Path) -> Iterator[CollectorServer]:
    settings = Settings.from_env(
        {
            **collector_settings.to_env(),
            "ANALYTICS_COLLECTOR_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_SECONDS),
        }
    )
    running = CollectorServer(settings, tmp_path / "collector.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def raw_request(body_length: int) -> bytes:
    auth = basic_auth(WRITE_KEY)["Authorization"]
    return (
        f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body_length}\r\n\r\n"
    ).encode()


def test_the_collector_listens_on_loopback_only(server: CollectorServer) -> None:
    addresses = listening_addresses(server.pid)
    assert addresses and all(is_loopback(address) for address, _ in addresses), addresses
    assert {port for _, port in addresses} == {server.settings.collector_port}


def test_slow_and_broken_clients_do_not_hold_up_the_others(
    server: CollectorServer, collector_settings: Settings
) -> None:
    port = server.settings.collector_port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    half_headers = []
    for _ in range(10):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        half_headers.append(connection)
    body = batch_body()
    trickler = socket.create_connection(("127.0.0.1", port))
    trickler.sendall(raw_request(len(body)))
    hang_up = socket.create_connection(("127.0.0.1", port))
    hang_up.sendall(raw_request(len(body)) + body[:10])
    hang_up.close()

    trickled_answer: list[bytes] = []
    answered = threading.Event()

    def trickle() -> None:  # one byte every 0.3 s: the whole body would take ~30 s
        try:
            for byte in body:
                if answered.wait(0.3):
                    return
                trickler.sendall(bytes([byte]))
        except OSError:  # the collector answered and closed the connection
            pass

    def read_answer() -> None:
        trickler.settimeout(15)
        answer = b""
        while chunk := trickler.recv(4096):  # until the collector closes the connection
            answer += chunk
        trickled_answer.append(answer)
        answered.set()

    threads = [threading.Thread(target=trickle), threading.Thread(target=read_answer)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    answers = [post(server.url, batch_body(), timeout=5) for _ in range(20)]
    served_in = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=20)
    for connection in [*idle, *half_headers, trickler]:
        connection.close()

    assert [status for status, _, _ in answers] == [200] * 20
    assert served_in < READ_TIMEOUT_SECONDS * 4  # not queued behind the slow ones
    head, _, payload = trickled_answer[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), trickled_answer
    assert json.loads(payload)["code"] == "request_timeout"
    blobs = read_blobs(collector_settings)
    assert len(blobs) == 20  # neither the trickled nor the cut-off body was written
    health = server.health()
    assert health["in_flight_bytes"] == 0 and health["request_timeout"] == 1


def test_requests_over_the_in_flight_bound_get_503_and_are_delivered_on_retry(
    aws_endpoint: str, tmp_path: Path
) -> None:
    proxy = FaultProxy(aws_endpoint).start()
    held_body, refused_body = batch_body(events=20), batch_body(events=20)
    env = unique_settings_env(
        proxy.endpoint_url,
        tmp_path,
        ANALYTICS_WRITE_KEYS=WRITE_KEYS_SETTING,
        ANALYTICS_COLLECTOR_MAX_INFLIGHT_BYTES=str(len(held_body) + 100),  # room for one
    )
    settings = Settings.from_env(env)
    direct = Settings.from_env({**env, "AWS_ENDPOINT_URL": aws_endpoint})
    ensure_resources(direct)
    server = CollectorServer(settings, tmp_path / "collector.log")
    # Not forwarded: the emulator never sees this call, and the collector's botocore gives up
    # on it after its read timeout and sends the record again (the proxy lets that through).
    held = proxy.add(Hold("PutRecords", forward_first=False))
    try:
        server.wait_ready()
        first: list[tuple[int, dict[str, str], Any]] = []
        sender = threading.Thread(target=lambda: first.append(post(server.url, held_body)))
        sender.start()
        assert held.held.wait(timeout=10), "the first request's PutRecords never came"

        status, headers, answer = post(server.url, refused_body)
        assert (status, answer["code"]) == (503, "overloaded")
        assert int(headers["retry-after"]) >= 1

        sender.join(timeout=20)
        assert first and first[0][0] == 200, first
        assert post(server.url, refused_body)[0] == 200  # what the SDK's retry does
    finally:
        proxy.clear()
        server.stop()
        proxy.stop()
    stored = [e["messageId"] for blob in read_blobs(direct) for e in blob["batch"]]
    sent = [e["messageId"] for body in (held_body, refused_body) for e in json.loads(body)["batch"]]
    assert sorted(stored) == sorted(sent)
