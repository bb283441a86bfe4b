"""An HTTP proxy in front of the AWS emulator that fails, delays, holds or rewrites chosen calls.

The processes under test get the proxy's URL as `AWS_ENDPOINT_URL`, so faults reach them over
the wire exactly as AWS would send them: a 5xx, a SendMessageBatch answer with entries in
`Failed`, a call that hangs, a response with other values. No test-only branch lives in
production code. Rules are added and cleared by the test while the stack runs; every call is
recorded (operation, client port, SQS message attributes) so a test can prove its fault hit.

Operations are named as AWS names them: the `X-Amz-Target` suffix for JSON services (Kinesis,
SQS) and `s3:GetObject`-style names for S3's REST calls.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_UPSTREAM_TIMEOUT_SECONDS = 60.0


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Call:
    """One request as the proxy received it."""

    operation: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    at: float = field(default_factory=time.time)
    reply: Reply | None = None

    def json(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")

    def entries(self) -> list[dict[str, Any]]:
        """SendMessageBatch / DeleteMessageBatch entries."""
        return list(self.json().get("Entries", []))


def entry_attribute(entry: dict[str, Any], name: str) -> str | None:
    attribute = entry.get("MessageAttributes", {}).get(name)
    return None if attribute is None else attribute.get("StringValue")


def operation_of(method: str, path: str, headers: dict[str, str]) -> str:
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    parts = [part for part in urlsplit(path).path.split("/") if part]
    has_key = len(parts) >= 2
    names = {
        ("GET", True): "s3:GetObject",
        ("PUT", True): "s3:PutObject",
        ("DELETE", True): "s3:DeleteObject",
        ("HEAD", True): "s3:HeadObject",
        ("HEAD", False): "s3:HeadBucket",
        ("PUT", False): "s3:CreateBucket",
    }
    return names.get((method, has_key), f"s3:{method}")


Forward = Callable[[Call, bytes | None], Reply]


class Rule:
    """Matches calls of one operation (optionally filtered) a limited number of times."""

    def __init__(
        self,
        operation: str,
        when: Callable[[Call], bool] | None = None,
        times: int | None = None,
    ) -> None:
        self.operation = operation
        self.when = when
        self.times = times
        self.applied = 0
        self.calls: list[Call] = []

    def matches(self, call: Call) -> bool:
        if call.operation != self.operation:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        return self.when is None or self.when(call)

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        """The reply to send; None drops the connection without answering."""
        raise NotImplementedError


def json_error(status: int, code: str, message: str) -> Reply:
    body = json.dumps({"__type": code, "message": message}).encode()
    return Reply(status, [("Content-Type", "application/x-amz-json-1.0")], body)


def s3_error(status: int, code: str, message: str) -> Reply:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    return Reply(status, [("Content-Type", "application/xml")], body)


class FailStatus(Rule):
    """Answer with a server error instead of forwarding (the call never reaches the emulator)."""

    def __init__(self, operation: str, status: int = 500, **kwargs: Any) -> None:
        super().__init__(operation, **kwargs)
        self.status = status

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        if call.operation.startswith("s3:"):
            return s3_error(self.status, "InternalError", "injected by the fault proxy")
        return json_error(self.status, "InternalFailure", "injected by the fault proxy")


class FailEntries(Rule):
    """SendMessageBatch partly fails: chosen entries are not sent and come back in `Failed`."""

    def __init__(self, entry_fails: Callable[[dict[str, Any]], bool], **kwargs: Any) -> None:
        super().__init__("SendMessageBatch", **kwargs)
        self.entry_fails = entry_fails
        self.failed_entries: list[dict[str, Any]] = []

    def matches(self, call: Call) -> bool:
        return super().matches(call) and any(self.entry_fails(e) for e in call.entries())

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        request = call.json()
        failing = [e for e in request["Entries"] if self.entry_fails(e)]
        passing = [e for e in request["Entries"] if not self.entry_fails(e)]
        self.failed_entries.extend(failing)
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        headers = [("Content-Type", "application/x-amz-json-1.0")]
        if passing:
            reply = forward(call, json.dumps({**request, "Entries": passing}).encode())
            if reply.status != 200:
                return reply
            answer = json.loads(reply.body)
            answer.setdefault("Failed", [])
            headers = reply.headers
        answer["Failed"] = list(answer.get("Failed", [])) + [
            {
                "Id": entry["Id"],
                "SenderFault": False,
                "Code": "InternalError",
                "Message": "injected by the fault proxy",
            }
            for entry in failing
        ]
        return Reply(200, headers, json.dumps(answer).encode())


class Hold(Rule):
    """Hold one call until released: either before forwarding it (the emulator never sees it)
    or after (the emulator did the work, the caller has not heard back). Meanwhile the test can
    find the caller by `client_port` and kill it."""

    def __init__(self, operation: str, forward_first: bool, **kwargs: Any) -> None:
        kwargs.setdefault("times", 1)
        super().__init__(operation, **kwargs)
        self.forward_first = forward_first
        self.held = threading.Event()
        self.released = threading.Event()
        self.client_port: int | None = None

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        reply = forward(call, None) if self.forward_first else None
        self.client_port = call.client_port
        self.held.set()
        self.released.wait(timeout=300)
        return reply  # None (not forwarded): the connection is dropped unanswered

    def release(self) -> None:
        self.released.set()


class DelayResponse(Rule):
    """Forward at once, answer `seconds` later (a slow call whose effect already happened)."""

    def __init__(self, operation: str, seconds: float, **kwargs: Any) -> None:
        super().__init__(operation, **kwargs)
        self.seconds = seconds

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        reply = forward(call, None)
        time.sleep(self.seconds)
        return reply


class Gate(Rule):
    """Every matching call waits until the gate opens (e.g. pause the trigger's GetRecords)."""

    def __init__(self, operation: str, **kwargs: Any) -> None:
        super().__init__(operation, **kwargs)
        self.opened = threading.Event()

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        self.opened.wait(timeout=120)
        return forward(call, None)

    def open(self) -> None:
        self.opened.set()


class ShiftArrival(Rule):
    """Rewrite GetRecords answers: records whose partition key the test names arrived
    `seconds` earlier or later than the emulator says (a resend days apart, in seconds)."""

    def __init__(self, shift_by_partition_key: dict[str, float], **kwargs: Any) -> None:
        super().__init__("GetRecords", **kwargs)
        self.shifts = shift_by_partition_key
        self.shifted = 0

    def handle(self, call: Call, forward: Forward) -> Reply | None:
        reply = forward(call, None)
        if reply.status != 200:
            return reply
        answer = json.loads(reply.body)
        for record in answer.get("Records", []):
            shift = self.shifts.get(record.get("PartitionKey"))
            if shift:
                record["ApproximateArrivalTimestamp"] += shift
                self.shifted += 1
        return Reply(reply.status, reply.headers, json.dumps(answer).encode())


AnyRule = TypeVar("AnyRule", bound=Rule)


class FaultProxy:
    """A threaded HTTP proxy to `upstream`; `endpoint_url` is what the stack is given."""

    def __init__(self, upstream: str, keep_replies_of: frozenset[str] = frozenset()) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.keep_replies_of = keep_replies_of
        self.rules: list[Rule] = []
        self.calls: list[Call] = []
        self._lock = threading.RLock()  # rule predicates may read the calls
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for rule in self.rules:
            if isinstance(rule, Hold):
                rule.release()
            if isinstance(rule, Gate):
                rule.open()
        self.server.shutdown()
        self.server.server_close()

    def add(self, rule: AnyRule) -> AnyRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            rules, self.rules = self.rules, []
        for rule in rules:
            if isinstance(rule, Hold):
                rule.release()
            if isinstance(rule, Gate):
                rule.open()

    def calls_of(self, operation: str, since: float = 0.0) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.operation == operation and c.at >= since]

    # -- serving -----------------------------------------------------------------------------

    def _match(self, call: Call) -> Rule | None:
        with self._lock:
            self.calls.append(call)
            for rule in self.rules:
                if rule.matches(call):
                    rule.applied += 1
                    rule.calls.append(call)
                    return rule
        return None

    def _forward(self, call: Call, body: bytes | None) -> Reply:
        body = call.body if body is None else body
        connection = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=_UPSTREAM_TIMEOUT_SECONDS
        )
        try:
            headers = {k: v for k, v in call.headers.items() if k not in _HOP_BY_HOP}
            headers["content-length"] = str(len(body))
            connection.request(call.method, call.path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if call.method == "HEAD":
                length = response.getheader("content-length")
                if length is not None:
                    kept.append(("Content-Length", length))
            return Reply(response.status, kept, content)
        finally:
            connection.close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body = _read_body(handler, headers)
        call = Call(
            operation=operation_of(handler.command, handler.path, headers),
            method=handler.command,
            path=handler.path,
            headers=headers,
            body=body,
            client_port=handler.client_address[1],
        )
        rule = self._match(call)
        try:
            reply = rule.handle(call, self._forward) if rule else self._forward(call, None)
        except OSError:
            reply = json_error(502, "ServiceUnavailable", "emulator unreachable")
        if reply is None:
            handler.close_connection = True
            return
        if call.operation in self.keep_replies_of:
            call.reply = reply
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers:
                handler.send_header(name, value)
            if call.method != "HEAD":
                handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            if call.method != "HEAD":
                handler.wfile.write(reply.body)
        except OSError:  # the caller is gone (killed while its call was held)
            handler.close_connection = True


def _read_body(handler: BaseHTTPRequestHandler, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


@dataclass(frozen=True)
class Received:
    message_id: str
    receive_count: int
    batch_id: str | None
    receipt_handle: str


def received_messages(call: Call) -> list[Received]:
    """What a kept ReceiveMessage reply handed out."""
    if call.reply is None or call.reply.status != 200:
        return []
    answer = json.loads(call.reply.body or b"{}")
    return [
        Received(
            message["MessageId"],
            int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
            entry_attribute(message, "batch_id"),
            message["ReceiptHandle"],
        )
        for message in answer.get("Messages", [])
    ]


def sent_batch_ids(call: Call) -> list[str]:
    return [b for b in (entry_attribute(e, "batch_id") for e in call.entries()) if b]
