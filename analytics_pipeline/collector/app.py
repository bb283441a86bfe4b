"""The collector's HTTP layer: Segment's Tracking API on Starlette, answered as the SDKs expect.

- `200 {"success": true}` only once the request's record is in Kinesis (the Python SDKs count
  nothing else as delivered, and nothing is acknowledged before it is durable).
- Errors are `{"code", "message"}` JSON: the Python SDKs give up on a 4xx only when they can
  read a `code`; without one they retry a 400 as if the network had failed.
- 401 for a missing or unknown write key, 400 for a body that cannot become a blob (see
  `payload`), 415 for a content type or encoding that is not JSON / gzip, 408 for a body not
  sent within `ANALYTICS_COLLECTOR_READ_TIMEOUT_SECONDS`, 429 (throttled) / 503 (Kinesis
  unavailable, or this worker holding `ANALYTICS_COLLECTOR_MAX_INFLIGHT_BYTES`) with
  Retry-After: every SDK retries those, and none retries a 400.
- Browsers: CORS for any origin (analytics.js sends an Authorization header, hence a
  preflight), and `GET /v1/projects/<writeKey>/settings` pointing analytics.js at this host,
  so a page needs no Segment CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from analytics_pipeline.collector.auth import Source, basic_auth_username, parse_write_keys
from analytics_pipeline.collector.kinesis import KinesisRefused, RecordWriter
from analytics_pipeline.collector.payload import (
    BATCH_ROUTES,
    EVENT_TYPE_BY_ROUTE,
    MAX_REQUEST_BYTES,
    RequestRejected,
    decode_request,
    request_text,
)
from analytics_pipeline.contract.limits import Limits
from analytics_pipeline.ingest.packing import compress_batch
from analytics_pipeline.settings import Settings

log = logging.getLogger(__name__)

ROUTES = frozenset(EVENT_TYPE_BY_ROUTE) | BATCH_ROUTES
JSON_MEDIA_TYPES = frozenset({"", "application/json", "text/plain"})  # analytics.js: text/plain
OVERLOADED_RETRY_AFTER_SECONDS = 1
CORS_ALLOWED_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "X-Retry-Count")
_UNREAD_BODY_CODES = frozenset({"request_timeout", "batch_too_large"})
_SUCCESS = b'{"success":true}'
_ENCODER = msgspec.json.Encoder()


class InflightBudget:
    """Bytes of requests this worker holds, from arrival until answered (one event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit and self.held:  # one request always fits
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class Collector:
    """The endpoints, around one `RecordWriter` per worker process."""

    def __init__(self, settings: Settings, writer: RecordWriter | None = None) -> None:
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.sources = parse_write_keys(settings.write_keys)
        self.writer = writer or RecordWriter.from_settings(settings)
        self.budget = InflightBudget(settings.collector_max_inflight_bytes)
        self.read_timeout = settings.collector_read_timeout_seconds
        self.stats: Counter[str] = Counter()

    async def track(self, request: Request) -> Response:
        route = request.path_params["route"]
        if route not in ROUTES:
            return error_response(404, "not_found", f"no route /v1/{route}")
        try:
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type not in JSON_MEDIA_TYPES:
                raise RequestRejected(
                    415, "unsupported_media_type", f"Content-Type {media_type!r}: send JSON"
                )
            header_key = basic_auth_username(request.headers.get("authorization"))
            if header_key is not None and header_key not in self.sources:
                raise RequestRejected(401, "invalid_write_key", "unknown write key")
            declared = _declared_length(request)
            if declared is not None and declared > MAX_REQUEST_BYTES:
                raise _body_too_large()
            reserve = declared or MAX_REQUEST_BYTES  # chunked: the most it may grow to
            if not self.budget.take(reserve):
                self.stats["overloaded"] += 1
                return error_response(
                    503,
                    "overloaded",
                    "the collector holds as many requests as it may; retry",
                    OVERLOADED_RETRY_AFTER_SECONDS,
                )
            try:
                body = await self._read_body(request)
                record, events = self._record(body, request, route, header_key)
                del body  # only the record is held while Kinesis answers
                if record is not None:
                    await self.writer.put(record)
            finally:
                self.budget.give(reserve)
        except RequestRejected as rejection:
            self.stats[rejection.code] += 1
            return error_response(
                rejection.status,
                rejection.code,
                rejection.message,
                # Part of the body may still be on its way: close rather than read it all.
                close=rejection.code in _UNREAD_BODY_CODES,
            )
        except KinesisRefused as refusal:
            code = "throttled" if refusal.throttled else "unavailable"
            self.stats[code] += 1
            return error_response(
                429 if refusal.throttled else 503,
                code,
                f"Kinesis did not store the events ({refusal.code}); retry",
                refusal.retry_after_seconds,
            )
        except ClientDisconnect:
            self.stats["client_disconnected"] += 1
            return error_response(400, "client_disconnected", "the body ended early")
        self.stats["accepted_requests"] += 1
        self.stats["accepted_events"] += events
        return Response(_SUCCESS, 200, media_type="application/json")

    async def _read_body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_REQUEST_BYTES:
                        raise _body_too_large()
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestRejected(
                408, "request_timeout", f"the body took longer than {self.read_timeout:g} s"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _record(
        self, body: bytes, request: Request, route: str, header_key: str | None
    ) -> tuple[bytes | None, int]:
        """The compressed Kinesis record for a request (None when it has no events)."""
        text = request_text(body, request.headers.get("content-encoding"), self.limits)
        payload = decode_request(text, route, self.limits)
        source = self._source(header_key or payload.write_key)
        if not payload.events:
            return None, 0
        return compress_batch(payload.blob(source)), len(payload.events)

    def _source(self, write_key: str | None) -> Source:
        if write_key is None:
            raise RequestRejected(
                401,
                "missing_write_key",
                "send the write key as the Basic auth username or as `writeKey`",
            )
        source = self.sources.get(write_key)
        if source is None:
            raise RequestRejected(401, "invalid_write_key", "unknown write key")
        return source

    async def project_settings(self, request: Request) -> Response:
        """What analytics.js would fetch from Segment's CDN: send the events here."""
        write_key = request.path_params["write_key"]
        if write_key not in self.sources:
            return error_response(401, "invalid_write_key", "unknown write key")
        api_host = f"{request.url.netloc}/v1"
        body = {
            "integrations": {
                "Segment.io": {
                    "apiKey": write_key,
                    "apiHost": api_host,
                    "protocol": request.url.scheme,
                }
            },
            "plan": {},
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0},  # no telemetry to Segment's /v1/m
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }
        return Response(
            _ENCODER.encode(body),
            200,
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def health(self, request: Request) -> Response:
        """Liveness of this worker (not of Kinesis: a load balancer must keep routing to us
        during an outage, so that SDKs get 503 + Retry-After rather than a proxy's error)."""
        body = {
            "status": "ok",
            "in_flight_bytes": self.budget.held,
            "kinesis_calls": self.writer.calls,
            "kinesis_records": self.writer.records,
            **self.stats,
        }
        return Response(_ENCODER.encode(body), 200, media_type="application/json")


def error_response(
    status: int,
    code: str,
    message: str,
    retry_after_seconds: int | None = None,
    *,
    close: bool = False,
) -> Response:
    headers = {"Retry-After": str(retry_after_seconds)} if retry_after_seconds else {}
    if close:
        headers["Connection"] = "close"
    return Response(
        _ENCODER.encode({"code": code, "message": message}),
        status,
        headers=headers,
        media_type="application/json",
    )


def _body_too_large() -> RequestRejected:
    return RequestRejected(
        400, "batch_too_large", f"the body is over the limit of {MAX_REQUEST_BYTES} bytes"
    )


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return max(int(value), 0)
    except ValueError:
        raise RequestRejected(400, "invalid_request", "Content-Length is not a number") from None


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail))


def create_app(settings: Settings | None = None, writer: RecordWriter | None = None) -> Starlette:
    """The ASGI app (uvicorn calls it with no arguments: settings from the environment)."""
    collector = Collector(settings or Settings.from_env(), writer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        collector.writer.start()
        try:
            yield
        finally:
            await asyncio.to_thread(collector.writer.stop)

    app = Starlette(
        routes=[
            Route("/v1/projects/{write_key}/settings", collector.project_settings),
            Route("/v1/{route}", collector.track, methods=["POST"]),
            Route("/health", collector.health),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST"],
                allow_headers=CORS_ALLOWED_HEADERS,
                max_age=86400,
            )
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.collector = collector
    return app


def serve(settings: Settings, workers: int = 1, **uvicorn_options: Any) -> None:
    """Run the collector under uvicorn on `ANALYTICS_COLLECTOR_HOST:PORT`."""
    import uvicorn

    uvicorn.run(
        "analytics_pipeline.collector.app:create_app",
        factory=True,
        host=settings.collector_host,
        port=settings.collector_port,
        workers=workers,
        access_log=False,  # a log line per request costs more than the request
        server_header=False,
        timeout_graceful_shutdown=30,
        **uvicorn_options,
    )
