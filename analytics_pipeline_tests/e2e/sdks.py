"""Third-party SDKs driven against the collector, with only the host and the write key changed.

- `segment-analytics-python` and `rudder-sdk-python` (PyPI) in this process;
- `@segment/analytics-node` (npm) in `node`, through `analytics_pipeline_tests/js/send_node.mjs`;
- `@segment/analytics-next` (analytics.js, npm) on a page served from 127.0.0.1, in Debian's
  `chromium` driven by Playwright (no browser download), a fresh profile per run.

Each takes the same list of `Call`s (one per event type and more) with messageIds chosen by the
test, an override every SDK supports, so the test can find each event in the warehouse.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Imported here, not in the threads that use them (concurrent first imports of `requests` race).
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from analytics_pipeline_testkit.browser import chromium

JS_DIR = Path(__file__).resolve().parents[1] / "js"
ANALYTICS_JS = JS_DIR / "node_modules/@segment/analytics-next/dist/umd/index.js"
SDKS = ("segment-python", "rudder-python", "segment-node", "analytics.js")


@dataclass
class Call:
    """One SDK call, named as the Node SDK names its parameters."""

    type: str
    messageId: str
    userId: str | None = None
    anonymousId: str | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    groupId: str | None = None
    previousId: str | None = None

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def calls_for(sdk: str, run: str, tracks: int = 3) -> list[Call]:
    """Every event type once (tracks several times), ids unique to this run."""
    user = f"{sdk}-{run}-user"

    def message_id() -> str:
        return f"{run}-{uuid.uuid4().hex[:16]}"

    calls = [
        Call("identify", message_id(), userId=user, traits={"plan": "pro", "logins": 3}),
        Call("page", message_id(), userId=user, category="Docs", name="Pricing",
             properties={"section": "plans"}),
        Call("screen", message_id(), userId=user, category="App", name="Feed",
             properties={"tab": "home"}),
        Call("group", message_id(), userId=user, groupId=f"{run}-org",
             traits={"name": "Acme", "employees": 12}),
        Call("alias", message_id(), userId=user, previousId=f"{run}-anonymous"),
    ]  # fmt: skip
    calls += [
        Call("track", message_id(), userId=user, event="Song Played",
             properties={"seconds": n, "tags": ["a", "b"], "nested": {"ok": True}})
        for n in range(tracks)
    ]  # fmt: skip
    return calls


# -- Python SDKs -----------------------------------------------------------------------------


def send_python(sdk: str, host: str, write_key: str, calls: list[Call]) -> list[str]:
    """Through the SDK's client (its own queue, consumer thread and retries); the errors."""
    client_class = SegmentClient if sdk == "segment-python" else RudderClient
    errors: list[str] = []
    client = client_class(
        write_key, host=host, on_error=lambda error, _: errors.append(repr(error))
    )
    for call in calls:
        kwargs = {
            "message_id": call.messageId,
            "user_id": call.userId,
            "anonymous_id": call.anonymousId,
            "event": call.event,
            "category": call.category,
            "name": call.name,
            "properties": call.properties,
            "traits": call.traits,
            "group_id": call.groupId,
            "previous_id": call.previousId,
        }
        allowed = _PYTHON_KWARGS[call.type]
        getattr(client, call.type)(**{k: v for k, v in kwargs.items() if k in allowed})
    client.flush()
    client.join()
    return errors


_PYTHON_KWARGS = {
    "track": {"user_id", "anonymous_id", "event", "properties", "message_id"},
    "page": {"user_id", "anonymous_id", "category", "name", "properties", "message_id"},
    "screen": {"user_id", "anonymous_id", "category", "name", "properties", "message_id"},
    "identify": {"user_id", "anonymous_id", "traits", "message_id"},
    "group": {"user_id", "anonymous_id", "group_id", "traits", "message_id"},
    "alias": {"user_id", "previous_id", "message_id"},
}


# -- Node ------------------------------------------------------------------------------------


def send_node(host: str, write_key: str, calls: list[Call], timeout: float = 150) -> list[str]:
    finished = subprocess.run(
        ["node", str(JS_DIR / "send_node.mjs"), host, write_key],
        input=json.dumps([call.params() for call in calls]),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=JS_DIR,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout.strip().splitlines()[-1])["errors"]


# -- the browser -----------------------------------------------------------------------------


class PageServer:
    """Serves the test page and the analytics.js bundle on 127.0.0.1 (another origin than the
    collector's, so the browser makes real CORS requests); records every path asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        files = {"/": JS_DIR / "page.html", "/analytics-next.js": ANALYTICS_JS}
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.paths.append(self.path)
                path = files.get(self.path.split("?")[0])
                if path is None:
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                kind = "text/html" if path.suffix == ".html" else "application/javascript"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(JS_DIR)))
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def send_browser(
    collector_url: str,
    write_key: str,
    calls: list[Call],
    strategy: dict[str, Any],
    delivered: Callable[[], bool],
    timeout: float = 90.0,
) -> dict[str, Any]:
    """Load the page in headless chromium, send the calls, and keep the page open (its queue,
    batching and retries live in it) until `delivered()` says everything arrived. Returns the
    page's answer, the requests the browser made and its console messages."""
    pages = PageServer()
    requests: list[str] = []
    console: list[str] = []
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
            page.on("console", lambda message: console.append(message.text))
            page.goto(pages.url)
            answer = page.evaluate(
                "([key, url, calls, strategy]) => window.sendCalls(key, url, calls, strategy)",
                [write_key, collector_url, [call.params() for call in calls], strategy],
            )
            deadline = time.monotonic() + timeout
            while not delivered() and time.monotonic() < deadline:
                page.wait_for_timeout(250)  # the page's timers run meanwhile
    finally:
        pages.stop()
    return {**answer, "requests": requests, "console": console, "served": pages.paths}
