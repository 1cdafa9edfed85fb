"""Pooled connections after a PostgreSQL restart: a connection the server dropped is discarded on
the error it raised, so the next checkout gets a live one (driver connections and sessions alike).
Runs its own embedded PostgreSQL so restarting it hits no other test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from db.session import (
    create_engine,
    create_session_maker,
    database_unavailable,
    driver_connection,
    session_scope,
)
from forgeline.embedded.postgres import EmbeddedPostgres
from forgeline.settings import Settings
from tests.conftest import own_postgres_server


@pytest.fixture
async def own_postgres(tmp_root: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A server of the test's own, empty: the pool needs no schema."""
    async with own_postgres_server(tmp_root, migrated=False) as server:
        yield server


async def test_a_dropped_driver_connection_is_not_pooled_again(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> None:
    # One pooled connection only: a dead one put back would be the next checkout's.
    one = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
    engine = create_engine(one, url=own_postgres.app_url)
    maker = create_session_maker(engine)
    try:
        async with driver_connection(maker) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        failures = 0
        # The server restarts while the connection is checked out (a statement in flight).
        for _ in range(3):
            try:
                async with driver_connection(maker) as conn:
                    await asyncio.to_thread(own_postgres.stop)
                    await asyncio.to_thread(own_postgres.start)
                    await conn.fetchval("SELECT 1")
            except Exception as exc:
                assert database_unavailable(exc), repr(exc)
                failures += 1
            # The very next checkout, at once (no idle ping), works on both paths.
            async with driver_connection(maker) as conn:
                assert await conn.fetchval("SELECT 2") == 2
            async with session_scope(maker) as session:
                assert (await session.execute(text("SELECT 3"))).scalar_one() == 3
        assert failures == 3
    finally:
        await engine.dispose()


async def test_unavailable_is_not_a_bad_statement(
    own_postgres: EmbeddedPostgres, settings: Settings
) -> None:
    """A wrong statement is not mistaken for an outage (it would be retried for ever)."""
    engine = create_engine(settings, url=own_postgres.app_url)
    maker = create_session_maker(engine)
    try:
        with pytest.raises(Exception) as caught:
            async with driver_connection(maker) as conn:
                await conn.fetchval("SELECT * FROM no_such_table")
        assert not database_unavailable(caught.value)
        with pytest.raises(Exception) as caught:
            async with session_scope(maker) as session:
                await session.execute(text("SELECT 1/0"))
        assert not database_unavailable(caught.value)
        async with driver_connection(maker) as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await engine.dispose()


async def test_a_pool_with_no_free_connection_is_unavailable(
    own_postgres: EmbeddedPostgres,
) -> None:
    """Every pooled connection busy past the pool's wait: unavailable (a 503 at the API, a wait
    for a stage's writes), not a bug."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from db.session import async_database_url

    engine = create_async_engine(
        async_database_url(own_postgres.app_url), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    maker = create_session_maker(engine)
    try:
        async with driver_connection(maker) as held:
            assert await held.fetchval("SELECT 1") == 1
            with pytest.raises(Exception) as caught:
                async with driver_connection(maker):
                    pass
            assert database_unavailable(caught.value), repr(caught.value)
    finally:
        await engine.dispose()
