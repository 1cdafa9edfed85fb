"""`api_keys.last_used_at` refreshed off the request path: every key due in a process goes out in
one UPDATE, a key is written at most once per interval, unknown keys are harmless, and a failed
write is retried at the key's next request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from core.accounts.rate_limit import LastUsedThrottle
from db.models.accounts import ApiKey
from tests.factories import make_org


@pytest.fixture
def key_updates(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", capture)


async def key_ids(session_maker: async_sessionmaker[AsyncSession], n: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(n):
        org = await make_org(session_maker)
        async with session_maker() as session:
            key = await session.execute(select(ApiKey).where(ApiKey.organization_id == org.org_id))
            ids.append(key.scalars().one().id)
    return ids


async def last_used(
    session_maker: async_sessionmaker[AsyncSession], ids: list[uuid.UUID]
) -> list[Any]:
    async with session_maker() as session:
        rows = await session.execute(
            select(ApiKey.id, ApiKey.last_used_at).where(ApiKey.id.in_(ids))
        )
        return [at for _, at in rows.all()]


async def test_concurrent_touches_of_many_keys_are_one_statement(session_maker, key_updates):
    ids = await key_ids(session_maker, 12)
    throttle = LastUsedThrottle(session_maker, batch_seconds=60)
    # Each key touched by several concurrent requests, an unknown (deleted) key among them.
    await asyncio.gather(*(throttle.touch(k) for k in [*ids, *ids, *ids, uuid.uuid4()]))
    assert key_updates == []  # nothing written on the requests' path
    await throttle.drain()
    assert len(key_updates) == 1
    assert all(at is not None for at in await last_used(session_maker, ids))
    # Within the interval a key is not written again.
    await asyncio.gather(*(throttle.touch(k) for k in ids))
    await throttle.drain()
    assert len(key_updates) == 1


async def test_the_batch_window_writes_without_a_drain(session_maker, key_updates):
    ids = await key_ids(session_maker, 2)
    throttle = LastUsedThrottle(session_maker, batch_seconds=0.01)
    for key in ids:
        await throttle.touch(key)
    for _ in range(500):
        if all(at is not None for at in await last_used(session_maker, ids)):
            break
        await asyncio.sleep(0.01)
    assert all(at is not None for at in await last_used(session_maker, ids))
    assert len(key_updates) == 1


async def test_a_failed_write_is_retried_at_the_next_request(session_maker):
    (key,) = await key_ids(session_maker, 1)
    # Nothing listens on loopback port 1: the write fails as with the database down.
    unreachable = create_async_engine("postgresql+asyncpg://x:y@127.0.0.1:1/none")
    try:
        throttle = LastUsedThrottle(async_sessionmaker(unreachable), batch_seconds=60)
        await throttle.touch(key)
        await throttle.drain()  # logs and forgets, never raises
        throttle._session_maker = session_maker  # the database is back
        await throttle.touch(key)  # not held back by the interval: the last write failed
        await throttle.drain()
    finally:
        await unreachable.dispose()
    assert (await last_used(session_maker, [key]))[0] is not None
