"""Fixtures of notification tests: fast-retry settings with a queue of the test's own, an SMTP
server, a webhook receiver, the notifications worker, and the API with those settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from forgeline.settings import Settings
from tests.conftest import loopback_client_address
from tests.notifications.support import Receiver, SmtpSink, fast_settings, notification_worker


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@pytest.fixture
def notify_settings(settings: Settings, smtp: SmtpSink) -> Settings:
    """Fast retries, the test's SMTP server, and a queue of the test's own: events other tests
    leave on the product's queue are never delivered here."""
    return fast_settings(
        settings,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_starttls=False,
        notifications_task_queue=f"notifications-{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
async def notifications(
    temporal_client: Client,
    notify_settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Worker]:
    async with notification_worker(temporal_client, notify_settings, session_maker) as worker:
        yield worker


@pytest.fixture
async def notify_api(
    notify_settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the test's settings: what it starts (redeliveries, limit events) goes to
    the test's queue."""
    app = create_app(notify_settings, session_maker=session_maker, temporal_client=temporal_client)
    transport = httpx.ASGITransport(app=app, client=(loopback_client_address(), 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
