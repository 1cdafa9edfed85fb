"""Pure ASGI middleware: request IDs (header, logs, problems), last-resort 500s, body size limit,
one retry of a read that met a database connection lost while pooled, security headers."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import CONNECTION_LOST_STATE, BodyTooLarge, problem_response, unhandled_problem

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_request_id: ContextVar[str | None] = ContextVar("forgeline_request_id", default=None)
access_logger = logging.getLogger("forgeline.api.access")


def current_request_id() -> str | None:
    return _request_id.get()


def install_request_id_log_records() -> None:
    """Give every log record a `request_id` attribute so formats can always reference it."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_forgeline_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _request_id.get() or "-"
        return record

    factory._forgeline_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Assigns the request ID, echoes it back, logs one access line, and turns a crash into a
    problem document (so an unexpected exception never reaches the client as a bare 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        valid = incoming is not None and _VALID_REQUEST_ID.match(incoming) is not None
        request_id = incoming if valid and incoming else uuid.uuid4().hex
        token = _request_id.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logging.getLogger("forgeline.api").exception(
                "unhandled error on %s %s", scope.get("method"), scope.get("path")
            )
            if response_started:
                raise
            response = unhandled_problem(Request(scope))
            await response(scope, receive, send_with_id)
        finally:
            access_logger.info(
                "%s %s %s %.1fms",
                scope.get("method"),
                scope.get("path"),
                status,
                (time.perf_counter() - started) * 1000,
            )
            _request_id.reset(token)


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413: up front from Content-Length, and while
    streaming for chunked uploads that lie about (or omit) their length. `path_limits` gives
    paths under a prefix a limit of their own (forge webhooks carry up to 25 MB)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    def _limit(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        for prefix, limit in self.path_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        response = problem_response(
            Request(scope),
            status=413,
            detail=f"Request body exceeds the limit of {limit} bytes",
            slug="payload-too-large",
            headers={"Connection": "close"},
        )

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


class ReadRetryMiddleware:
    """Runs a GET/HEAD once more when it failed on a pooled connection PostgreSQL had dropped
    (a restart): the API pings no connection at checkout, so the first request after a restart
    is the one to find out. SQLAlchemy has invalidated that connection and every older one, so
    the second run gets a fresh connection. Reads write nothing and the first run's 503 is held
    back unsent, so the client sees one ordinary answer. Writes are not retried: they answer
    503 with Retry-After."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        body: list[Message] = []
        held = False

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message)
            return message

        async def send_unless_lost(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and state.pop(CONNECTION_LOST_STATE, False):
                held = True
            if not held:
                await send(message)

        await self.app(scope, recording_receive, send_unless_lost)
        if not held:
            return
        replay = iter(body)

        async def replaying_receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replaying_receive, send)


# Every API answer: no sniffing, no referrer, never framed, and a CSP that lets a JSON or problem
# document do nothing if a browser renders it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# The interactive docs: Swagger UI / ReDoc from their CDN, inline scripts only by hash.
_DOCS_SOURCES = {
    "script-src": "'self' https://cdn.jsdelivr.net",
    "style-src": "'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'",
    "img-src": "'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
    "font-src": "https://fonts.gstatic.com",
    "connect-src": "'self'",
    "worker-src": "blob:",
}
_INLINE_SCRIPT = re.compile(rb"<script(?:\s[^>]*)?>(.*?)</script>", re.DOTALL | re.IGNORECASE)
HSTS = "max-age=31536000"


def docs_csp(html: bytes) -> str:
    """The docs page's CSP: its inline scripts allowed by their SHA-256, nothing else inline."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
        if body.strip()
    ]
    sources = dict(_DOCS_SOURCES)
    sources["script-src"] = " ".join([sources["script-src"], *hashes])
    parts = ["default-src 'none'", *(f"{k} {v}" for k, v in sources.items())]
    return "; ".join([*parts, "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"])


class SecurityHeadersMiddleware:
    """Security headers on every response, set where the endpoint did not set its own (the
    sandboxed site path sets its CSP); HSTS when the request came over https."""

    def __init__(self, app: ASGIApp, *, docs_paths: set[str], always_https: bool = False) -> None:
        self.app = app
        self.docs_paths = docs_paths
        self.always_https = always_https

    def _headers(self, scope: Scope, existing: list[tuple[bytes, bytes]], csp: str) -> list[Any]:
        present = {key.lower() for key, _ in existing}
        wanted = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
        ]
        if self.always_https or scope.get("scheme") == "https":
            wanted.append((b"strict-transport-security", HSTS.encode()))
        return existing + [(k, v) for k, v in wanted if k not in present]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") in self.docs_paths:
            await self._docs(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = self._headers(scope, list(message.get("headers", [])), API_CSP)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The docs pages are small: held whole so their inline scripts can be hashed."""
        start: Message | None = None
        body: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False) or start is None:
                return
            html = b"".join(body)
            headers = self._headers(scope, list(start.get("headers", [])), docs_csp(html))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": html})

        await self.app(scope, receive, hold)
