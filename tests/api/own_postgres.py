"""Fixtures for API tests that stop PostgreSQL: a server of their own (stopping it hits no other
test), an organization in it, and an API client whose app uses it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from db.session import create_engine, create_session_maker
from forgeline.embedded.postgres import EmbeddedPostgres, free_port
from forgeline.settings import Settings
from forgeline.stack import run_migrations
from tests.conftest import TEST_PG_OPTIONS
from tests.factories import OrgFixture, make_org


@pytest.fixture
async def own_postgres(tmp_root: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(
        tmp_root / f"pg-{uuid.uuid4().hex[:8]}",
        free_port(),
        database="forgeline",
        server_options=TEST_PG_OPTIONS,
    )
    await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(run_migrations, server.migrator_url)
        yield server
    finally:
        await asyncio.to_thread(server.destroy)


@pytest.fixture
async def org(own_postgres: EmbeddedPostgres, settings: Settings) -> AsyncIterator[OrgFixture]:
    engine = create_engine(settings, url=own_postgres.app_url)
    try:
        yield await make_org(create_session_maker(engine))
    finally:
        await engine.dispose()


@pytest.fixture
async def client(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"database_url": own_postgres.app_url}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http
