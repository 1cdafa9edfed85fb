"""A busy key's lease when PostgreSQL goes away midway (core/accounts/key_leases.py): requests
are 503 (never a 500, never served past the lease's TTL from what the process remembers), the
lease table survives lookups that failed, and once the server is back every request is served
and counted again. Runs its own embedded PostgreSQL so stopping it hits no other test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from core.accounts import key_leases
from core.accounts.key_leases import KeyLeases
from db.session import create_engine, create_session_maker
from forgeline.embedded.postgres import EmbeddedPostgres
from forgeline.settings import Settings
from tests.api.own_postgres import org  # noqa: F401
from tests.api.test_api_key_lookup import counted
from tests.factories import OrgFixture

WARM = 300


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def leased(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI, Clock]]:
    app = create_app(settings.model_copy(update={"database_url": own_postgres.app_url}))
    clock = Clock()
    app.state.key_leases = KeyLeases(clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http, app, clock


async def hits_of(server: EmbeddedPostgres, settings: Settings, owner: OrgFixture) -> int:
    engine = create_engine(settings, url=server.app_url)
    try:
        return await counted(create_session_maker(engine), owner.api_key_id)
    finally:
        await engine.dispose()


def unavailable(response: httpx.Response) -> bool:
    return response.status_code == 503 and int(response.headers["retry-after"]) >= 1


async def test_a_stopped_server_is_503_on_a_leased_key_and_served_again_after(
    own_postgres: EmbeddedPostgres,
    settings: Settings,
    org: OrgFixture,  # noqa: F811
    leased: tuple[httpx.AsyncClient, FastAPI, Clock],
) -> None:
    client, _, clock = leased
    for _ in range(WARM):
        assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200
    await asyncio.to_thread(own_postgres.stop)
    try:
        # The lease may still admit the key, the read itself cannot be served.
        for _ in range(5):
            assert unavailable(await client.get("/v1/projects", headers=org.headers))
        # Past the TTL nothing remembered admits anyone: the lookup fails, 503.
        clock.now += key_leases.LEASE_TTL_SECONDS
        for _ in range(3):
            assert unavailable(await client.get("/v1/me", headers=org.headers))
    finally:
        await asyncio.to_thread(own_postgres.start)
    served = 0
    for _ in range(40):
        answer = await client.get("/v1/projects", headers=org.headers)
        assert answer.status_code == 200 or unavailable(answer)
        served += answer.status_code == 200
    assert served >= 39  # at most the one read retried onto a dead pooled connection
    assert await hits_of(own_postgres, settings, org) >= WARM + served


async def test_sessions_killed_under_a_busy_key_are_503_or_served_and_all_counted(
    own_postgres: EmbeddedPostgres,
    settings: Settings,
    org: OrgFixture,  # noqa: F811
    leased: tuple[httpx.AsyncClient, FastAPI, Clock],
) -> None:
    client, _, _ = leased
    for _ in range(40):
        assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200

    async def killer() -> None:
        for _ in range(20):
            conn = await asyncpg.connect(own_postgres.admin_url)
            try:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE usename = 'forgeline_app'"
                )
            finally:
                await conn.close()
            await asyncio.sleep(0)

    async def reader() -> list[int]:
        codes = []
        for _ in range(40):
            answer = await client.get("/v1/projects", headers=org.headers)
            assert answer.status_code == 200 or unavailable(answer), answer.text
            codes.append(answer.status_code)
        return codes

    _, *batches = await asyncio.gather(killer(), reader(), reader())
    served = sum(code == 200 for batch in batches for code in batch)
    for _ in range(5):
        assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200
    # Every request admitted was counted before it was admitted, outage or not.
    assert await hits_of(own_postgres, settings, org) >= 40 + served + 5
