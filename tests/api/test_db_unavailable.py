"""Every way PostgreSQL can be unavailable answers 503 with Retry-After, never a 500: a server
shutting down (57P03 for new connections), a session terminated under a request (57P01), a server
that is gone. Runs its own embedded PostgreSQL so stopping it hits no other test."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from db.session import create_engine, create_session_maker
from forgeline.embedded.postgres import EmbeddedPostgres
from forgeline.settings import Settings

# The fixtures of this module (imported to be found; used by name as test parameters).
from tests.api.own_postgres import client, org  # noqa: F401
from tests.factories import OrgFixture


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"].endswith("/service-unavailable")


async def _terminate_app_sessions(server: EmbeddedPostgres) -> int:
    conn = await asyncpg.connect(server.admin_url)
    try:
        count = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = 'forgeline_app'"
        )
    finally:
        await conn.close()
    return int(count or 0)


async def test_a_shutting_down_postgres_is_503(
    own_postgres: EmbeddedPostgres,
    org: OrgFixture,  # noqa: F811
    client: httpx.AsyncClient,  # noqa: F811
    settings: Settings,
) -> None:
    assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200
    # A smart shutdown waits for the sessions it has and refuses new ones with 57P03 ("the
    # database system is shutting down") for as long as this one stays open.
    holder = await asyncpg.connect(own_postgres.admin_url)
    try:
        # Pooled connections die first, so every request needs a new one.
        await _terminate_app_sessions(own_postgres)
        await asyncio.to_thread(
            own_postgres._run,
            "pg_ctl",
            "-D",
            str(own_postgres.data_dir),
            "-m",
            "smart",
            "-W",
            "stop",
        )

        async def refused() -> bool:
            try:
                conn = await asyncpg.connect(own_postgres.app_url, timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                return "shutting down" in str(exc)
            await conn.close()
            return False

        while not await refused():
            await asyncio.sleep(0.05)
        for _ in range(3):
            assert_unavailable(await client.get("/v1/projects", headers=org.headers))
        assert_unavailable(
            await client.post(
                "/v1/projects", json={"name": "Down", "project_type": "api"}, headers=org.headers
            )
        )
        # The worker's engine (driver connections included) says the same through its errors.
        engine = create_engine(settings, url=own_postgres.app_url)
        try:
            from db.session import database_unavailable, driver_connection

            with pytest.raises(Exception) as caught:
                async with driver_connection(create_session_maker(engine)) as conn:
                    await conn.fetchval("SELECT 1")
            assert database_unavailable(caught.value), repr(caught.value)
        finally:
            await engine.dispose()
    finally:
        await holder.close()
    # The shutdown completes by itself once the last session is gone (stopping it again could
    # race it); then the server comes back.
    for _ in range(600):
        if not await asyncio.to_thread(own_postgres.is_running):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the smart shutdown did not finish after its last session closed")
    await asyncio.to_thread(own_postgres.start)
    assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200


async def test_sessions_terminated_under_requests_are_503_or_served(
    own_postgres: EmbeddedPostgres,
    org: OrgFixture,  # noqa: F811
    client: httpx.AsyncClient,  # noqa: F811
) -> None:
    """Requests in flight while the server kills their sessions (57P01 admin shutdown) end as a
    success or a clean 503, then every request succeeds again on fresh connections."""
    assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200

    async def killer() -> None:
        for _ in range(20):
            await _terminate_app_sessions(own_postgres)
            await asyncio.sleep(0)

    async def reader() -> list[int]:
        codes = []
        for _ in range(20):
            response = await client.get("/v1/projects", headers=org.headers)
            if response.status_code != 200:
                assert_unavailable(response)
            codes.append(response.status_code)
        return codes

    _, *codes = await asyncio.gather(killer(), reader(), reader())
    assert all(code in (200, 503) for batch in codes for code in batch)
    for _ in range(3):
        assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200
