"""Deployment CLI tests: a real Caddy in front of static sites and a deployments worker on the
queue the API starts deployments on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from tests.deployments.helpers import make_activities, running_worker
from tests.deployments.proxy import CaddyProcess


@pytest.fixture(scope="session")
def caddy(tmp_root: Path) -> Iterator[CaddyProcess]:
    proc = CaddyProcess(tmp_root / "cli-caddy")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def settings(settings: Settings, caddy: CaddyProcess) -> Settings:
    return settings.model_copy(
        update={"proxy_admin_url": caddy.admin_url, "proxy_http_port": caddy.http_port}
    )


@pytest.fixture
async def deploy_worker(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], temporal_client: Client
) -> AsyncIterator[None]:
    # Static sites only: no container engine is needed.
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, DEPLOYMENTS_TASK_QUEUE, activities):
        yield
