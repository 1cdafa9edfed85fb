"""The regeneration script's scratch database: created on a server that allows it and dropped
afterwards, or the given database used as it is where the role may not create one."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from db.regen_migration import scratch_database
from db.session import driver_dsn
from forgeline.blocking import run_blocking
from forgeline.embedded.postgres import EmbeddedPostgres


def _databases(admin_url: str) -> set[str]:
    async def fetch() -> set[str]:
        conn = await asyncpg.connect(admin_url)
        try:
            return {row[0] for row in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    return run_blocking(fetch)


def test_a_scratch_database_is_created_and_dropped(postgres: EmbeddedPostgres | None) -> None:
    assert postgres is not None, "needs the embedded server's superuser"
    before = _databases(postgres.admin_url)
    with scratch_database(postgres.superuser_url) as url:
        parsed = make_url(url)
        assert parsed.drivername == "postgresql+asyncpg"
        assert parsed.database not in before
        assert parsed.database in _databases(postgres.admin_url)
        run_blocking(lambda: _select_one(driver_dsn(url)))
    assert _databases(postgres.admin_url) == before


def test_a_role_without_createdb_gets_its_own_database(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None
    before = _databases(postgres.admin_url)
    with scratch_database(database_url) as url:
        assert make_url(url).database == make_url(database_url).database
    assert _databases(postgres.admin_url) == before


async def _select_one(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
