"""Fixtures of notification tests: fast-retry settings, an SMTP server, a webhook receiver and
the notifications worker (on the queue emitters start their workflows on)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from forgeline.settings import Settings
from tests.notifications.support import Receiver, SmtpSink, fast_settings, notification_worker


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


@pytest.fixture
def notify_settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return fast_settings(settings, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=False)


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
