"""Receivers that misbehave: an endless answer (only its start is kept), a redirect to the cloud
metadata address (never followed), an answer that never comes (a timeout, retried, then failed).
Each is a real server on loopback speaking raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from core.notifications import emit
from forgeline.settings import Settings
from tests.factories import make_org
from tests.notifications.support import notification_outcome

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def endless(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    while True:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()


async def redirect(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()


async def silent(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[tuple[str, list[bytes]]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            await reader.readexactly(length)
            seen.append(head)
            await answer(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        server.close()


async def deliver_to(
    api: httpx.AsyncClient, client: Client, sessions: async_sessionmaker[AsyncSession],
    settings: Settings, url: str,
) -> dict[str, Any]:  # fmt: skip
    org = await make_org(sessions)
    endpoint = await api.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["deployment.failed"]},
        headers=org.headers,
    )
    assert endpoint.status_code == 201, endpoint.text
    key = f"deployment.failed:{uuid.uuid4()}"
    event = emit.event(
        settings, key=key, event_type="deployment.failed", organization_id=org.org_id,
        title="Deployment failed", body="Health check failed.", data={},
    )  # fmt: skip
    await emit.emit(client, settings, event)
    await notification_outcome(client, key)
    page = await api.get(
        f"/v1/webhook-endpoints/{endpoint.json()['id']}/deliveries", headers=org.headers
    )
    [delivery] = page.json()["items"]
    return dict(delivery)


async def test_an_endless_answer_is_cut(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
) -> None:
    async with raw_server(endless) as (url, seen):
        delivery = await deliver_to(
            api_client, temporal_client, session_maker, notify_settings, url
        )
    assert delivery["status"] == "delivered" and len(seen) == 1
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and len(attempt["response_excerpt"]) == 2048


async def test_a_redirect_is_not_followed(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
) -> None:
    async with raw_server(redirect) as (url, seen):
        delivery = await deliver_to(
            api_client, temporal_client, session_maker, notify_settings, url
        )
    # Every try reached this server only, was answered 302 and counted as not delivered.
    assert delivery["status"] == "failed" and len(seen) == 3
    attempts = delivery["attempts"]
    assert [a["status_code"] for a in attempts] == [302] * 3


async def test_an_answer_that_never_comes_times_out(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
) -> None:
    impatient = notify_settings.model_copy(update={"notification_request_timeout_seconds": 0.3})
    async with raw_server(silent) as (url, seen):
        delivery = await deliver_to(api_client, temporal_client, session_maker, impatient, url)
    assert delivery["status"] == "failed" and len(seen) == 3
    errors = [a["error"] for a in delivery["attempts"]]
    assert all("Timeout" in e for e in errors), errors
