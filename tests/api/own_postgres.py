"""Fixtures for API tests that stop PostgreSQL, on the server of their own that `own_postgres`
(tests/conftest.py) gives: an organization in it, and an API client whose app uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from db.session import create_engine, create_session_maker
from forgeline.embedded.postgres import EmbeddedPostgres
from forgeline.settings import Settings
from tests.factories import OrgFixture, make_org


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
