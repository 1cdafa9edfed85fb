"""The API's one pure-ASGI middleware: what every request passes through before routing, in one
layer instead of five nested ones (each nesting wrapped `send`/`receive` and cost a frame per
message).

From the outside in, in this order:
1. security headers on every answer, a last-resort 500 included, set where the endpoint did not
   set its own (the sandboxed site path sets its CSP); HSTS when the request came over https;
2. the request ID (header, logs, problems), one access log line, and a problem document instead
   of a crash (an unexpected exception never reaches the client as a bare 500);
3. the body size limit, so even a 413 carries an ID: up front from Content-Length, and while
   streaming for chunked uploads that lie about (or omit) their length; paths under a prefix of
   `path_limits` have a limit of their own (forge webhooks carry up to 25 MB);
4. the latency histogram, by route template and status (a retried read is one request);
5. one more run of a GET/HEAD that failed on a pooled connection PostgreSQL had dropped (a
   restart): the API pings no connection at checkout, so the first request after a restart is
   the one to find out. SQLAlchemy has invalidated that connection and every older one, so the
   second run gets a fresh connection. Reads write nothing and the first run's 503 is held back
   unsent, so the client sees one ordinary answer. Writes are not retried: they answer 503 with
   Retry-After.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import CONNECTION_LOST_STATE, BodyTooLarge, problem_response, unhandled_problem
from api.metrics.instrumentation import observe_request
from api.middleware import _VALID_REQUEST_ID, API_CSP, HSTS, _request_id, access_logger, docs_csp

_REQUEST_ID = b"x-request-id"
_CONTENT_LENGTH = b"content-length"
_READS = ("GET", "HEAD")


def _security_headers(csp: str, https: bool) -> list[tuple[bytes, bytes]]:
    wanted = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", csp.encode()),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]
    if https:
        wanted.append((b"strict-transport-security", HSTS.encode()))
    return wanted


def _with_security(
    existing: list[Any], wanted: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The headers the endpoint did not set itself (the sandboxed site path sets its CSP)."""
    present = {key.lower() for key, _ in existing}
    return existing + [(k, v) for k, v in wanted if k not in present]


class ApiEdgeMiddleware:
    """Security headers, request ID and access log, body limit, metrics and the read retry."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        path_limits: dict[str, int] | None = None,
        docs_paths: set[str],
        always_https: bool = False,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}
        self.docs_paths = docs_paths
        self.always_https = always_https
        # Computed once: the same list for every API answer.
        self._api_headers = {
            https: _security_headers(API_CSP, https or always_https) for https in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        if scope.get("path") in self.docs_paths:
            send = self._holding_docs(send, https)
        else:
            wanted = self._api_headers[https]

            async def send_secured(message: Message, _send: Send = send) -> None:
                if message["type"] == "http.response.start":
                    headers = _with_security(list(message.get("headers", [])), wanted)
                    message = {**message, "headers": headers}
                await _send(message)

            send = send_secured
        await self._with_request_id(scope, receive, send)

    async def _with_request_id(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = None
        declared = None
        for key, value in scope.get("headers", ()):
            name = key.lower()
            if name == _REQUEST_ID and incoming is None:
                incoming = value.decode("latin-1")
            elif name == _CONTENT_LENGTH and declared is None:
                declared = value.decode("latin-1")
        valid = incoming is not None and _VALID_REQUEST_ID.match(incoming) is not None
        request_id = incoming if valid and incoming else uuid.uuid4().hex
        id_header = (_REQUEST_ID, request_id.encode())
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
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        try:
            limit = self._limit(scope)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._reject(scope, send_with_id, limit)
                return
            measured = time.perf_counter()
            try:
                await self._limited(scope, receive, send_with_id, limit)
            finally:
                observe_request(scope, status, time.perf_counter() - measured)
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

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """The app under the streaming body limit, a read run once more after a lost
        connection (the first run's answer held back unsent)."""
        received = 0
        is_read = scope.get("method") in _READS
        body: list[Message] = []

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                if is_read:
                    body.append(message)
            return message

        if not is_read:
            await self.app(scope, counting_receive, send)
            return
        state = scope.setdefault("state", {})
        held = False

        async def send_unless_lost(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and state.pop(CONNECTION_LOST_STATE, False):
                held = True
            if not held:
                await send(message)

        await self.app(scope, counting_receive, send_unless_lost)
        if not held:
            return
        replay = iter(body)

        async def replaying_receive() -> Message:
            return next(replay, None) or await counting_receive()

        await self.app(scope, replaying_receive, send)

    def _limit(self, scope: Scope) -> int:
        path = str(scope.get("path", ""))
        for prefix, limit in self.path_limits.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

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

    def _holding_docs(self, send: Send, https: bool) -> Send:
        """The docs pages are small: held whole so their inline scripts can be hashed."""
        start: Message | None = None
        body: list[bytes] = []
        secure = https or self.always_https

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
            wanted = _security_headers(docs_csp(html), secure)
            headers = _with_security(list(start.get("headers", [])), wanted)
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": html})

        return hold
