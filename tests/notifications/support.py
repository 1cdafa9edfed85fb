"""Real receivers for notification tests: an HTTP server on loopback that answers with the
statuses it is told (webhook endpoints, the Slack fake), an aiosmtpd SMTP server that keeps what
it receives, and the notifications worker with fast retries."""

from __future__ import annotations

import asyncio
import email
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.notifications.registration import registration
from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.mail import Mailer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A loopback HTTP server; each POST gets the next status of `statuses` (then `default`)."""

    statuses: list[int] = field(default_factory=list)
    default: int = 200
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with lock:
                    code = owner.statuses.pop(0) if owner.statuses else owner.default
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    owner.requests.append(Received(self.path, headers, body, code))
                self.send_response(code)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if code < 300 else b"nope")

            def log_message(self, *args: Any) -> None:
                return

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it accepts."""

    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


def fast_settings(settings: Settings, **overrides: Any) -> Settings:
    """Retries in tenths of a second, so a test sees every attempt quickly."""
    values: dict[str, Any] = {
        "notification_max_attempts": 3,
        "notification_retry_initial_seconds": 0.1,
        "notification_retry_max_seconds": 0.2,
        "notification_request_timeout_seconds": 5.0,
        **overrides,
    }
    return settings.model_copy(update=values)


@asynccontextmanager
async def notification_worker(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    *,
    mailer: Mailer | None = None,
) -> AsyncIterator[Worker]:
    deps = WorkerDeps(settings=settings, session_maker=session_maker, temporal=client)
    reg = registration(deps, mailer=mailer)
    async with Worker(
        client,
        task_queue=reg.task_queue,
        workflows=list(reg.workflows),
        activities=list(reg.activities),
        workflow_runner=workflow_runner(True),
    ) as worker:
        yield worker


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)


async def history_payloads(client: Client, workflow_id: str) -> list[bytes]:
    """Every input and result payload in the workflow's history, decoded as workers see them."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    wanted = (
        ("workflow_execution_started_event_attributes", "input"),
        ("activity_task_scheduled_event_attributes", "input"),
        ("activity_task_completed_event_attributes", "result"),
        ("workflow_execution_completed_event_attributes", "result"),
    )
    found: list[bytes] = []
    codec = client.data_converter.payload_codec
    for event in history.events:
        for attributes, name in wanted:
            if event.HasField(attributes):  # type: ignore[arg-type]
                payloads = list(getattr(getattr(event, attributes), name).payloads)
                if codec is not None:
                    payloads = await codec.decode(payloads)
                found.extend(p.data for p in payloads)
    return found


async def notification_outcome(client: Client, key: str, timeout: float = 30.0) -> Any:
    """The result of the event's notification workflow, once its emitter has started it (the
    emitter starts it right after committing the change a test may already have seen)."""
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.notification import NotificationWorkflow
    from workflows.notifications_models import notification_workflow_id

    handle = client.get_workflow_handle_for(NotificationWorkflow.run, notification_workflow_id(key))
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await handle.result()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)
