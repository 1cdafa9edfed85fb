"""The shared API-key rate limit's cost: its one statement (upsert of the key's minute, prune,
read of the previous minute) side by side with the key lookup every API-key request already
makes, and with `SELECT 1`, on the same autocommit connection an authenticated read uses.

Run alone: `uv run python -m bench.run --only rate_limit --skip-baseline`.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.context import BenchContext, BenchRow
from core.accounts import security
from core.accounts.keys import insert_api_key
from core.accounts.organizations import create_organization_with_owner
from core.accounts.rate_limit import ApiKeyRateLimiter
from core.accounts.repository import api_key_auth_row
from core.accounts.scopes import ALL_SCOPES
from db.session import create_engine, create_session_maker, session_scope
from forgeline.settings import Settings

REPEATS = 1000


async def _p50(call: Callable[[], Awaitable[object]]) -> float:
    for _ in range(50):  # warm: prepared statements, caches
        await call()
    times: list[float] = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        await call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def run(ctx: BenchContext) -> list[BenchRow]:
    url = await ctx.database_url()
    settings = Settings(environment="development", database_url=url, data_dir=ctx.work_dir / "data")
    engine = create_engine(settings, url=url)
    maker = create_session_maker(engine)
    try:
        suffix = uuid.uuid4().hex[:10]
        async with session_scope(maker) as session:
            created = await create_organization_with_owner(
                session,
                organization_name=f"Bench {suffix}",
                organization_slug=f"bench-{suffix}",
                email=f"bench-{suffix}@example.com",
                name="Bench",
                password_hash=None,
            )
            key, raw = await insert_api_key(
                session,
                organization_id=created.organization.id,
                created_by_user_id=created.user.id,
                name="bench",
                scopes=sorted(ALL_SCOPES),
                expires_at=None,
                rate_limit_per_minute=1_000_000,
            )
        limiter = ApiKeyRateLimiter(maker)
        async with engine.connect() as plain:
            conn: AsyncConnection = await plain.execution_options(isolation_level="AUTOCOMMIT")
            select_one = await _p50(lambda: conn.execute(text("SELECT 1")))
            prefix = raw[: security.DISPLAY_PREFIX_LENGTH]
            lookup = await _p50(lambda: api_key_auth_row(conn, prefix))
            bump = await _p50(lambda: limiter.check(conn, key.id, 1_000_000))
    finally:
        await engine.dispose()
    return [
        BenchRow("API-key rate limit", "SELECT 1 p50", select_one),
        BenchRow("API-key rate limit", "key lookup p50", lookup, baseline=select_one),
        BenchRow("API-key rate limit", "shared count p50", bump, baseline=lookup),
    ]
