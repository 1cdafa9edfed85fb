"""Fixtures of the console tests that follow agent tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from forgeline.settings import Settings
from tests.agent.support import verifying_workers


@pytest.fixture
async def workers(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[None]:
    """The agent worker and a pipelines worker: a generate task with `verify` runs through."""
    async with verifying_workers(
        temporal_client, settings, session_maker, tmp_path / "runner-state"
    ):
        yield
