"""Per-API-key request rate limit (requests per minute, from the key row), shared by every API
process, and the throttled `last_used_at` refresh.

The count lives in PostgreSQL (`api_key_rate_windows`): one statement per request bumps the
key's row of the current minute (an atomic upsert, so concurrent requests on any process get
distinct counts), drops the key's rows older than the previous minute and reads the previous
minute's count. The decision is a sliding-window estimate (previous minute weighted by how much
of it is still inside the last 60 s, plus the current minute), so a burst across a minute
boundary cannot pass twice the limit. Every request is counted, refused ones included.

The statement runs on a connection in autocommit, so the row lock lasts that statement only and
never the request: the request's own connection when it already is (reads), else one of its own
taken before the request's unit of work holds any (see core/accounts/authentication.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from db.models.accounts import ApiKey

WINDOW_SECONDS = 60.0

log = logging.getLogger(__name__)

_BUMP = text(
    """
WITH bump AS (
    INSERT INTO api_key_rate_windows AS w (api_key_id, window_start, hits)
    VALUES (:key_id,
            date_bin('60 seconds', clock_timestamp(), TIMESTAMPTZ '2000-01-01 00:00:00+00'), 1)
    ON CONFLICT (api_key_id, window_start) DO UPDATE SET hits = w.hits + 1
    RETURNING w.window_start, w.hits
), expired AS (
    DELETE FROM api_key_rate_windows old USING bump
    WHERE old.api_key_id = :key_id AND old.window_start < bump.window_start - interval '60 s'
)
SELECT bump.hits, COALESCE(prev.hits, 0),
       EXTRACT(EPOCH FROM clock_timestamp() - bump.window_start)::float8
FROM bump LEFT JOIN api_key_rate_windows prev
  ON prev.api_key_id = :key_id AND prev.window_start = bump.window_start - interval '60 s'
"""
)


@dataclass(frozen=True)
class WindowCount:
    """One request counted: this minute's hits (it included), the previous minute's, and how far
    into this minute it came."""

    hits: int
    previous: int
    elapsed: float

    def retry_after(self, limit: int) -> int | None:
        """None when allowed, else the seconds until a request would be."""
        elapsed = min(max(self.elapsed, 0.0), WINDOW_SECONDS)
        weight = (WINDOW_SECONDS - elapsed) / WINDOW_SECONDS
        if self.previous * weight + self.hits <= limit:
            return None
        if self.hits >= limit or self.previous == 0:
            # This minute alone is spent: the next one starts afresh (a hint, not a promise).
            wait = WINDOW_SECONDS - elapsed
        else:
            # The previous minute weighs less as time passes: when it leaves room for one more.
            free_at = WINDOW_SECONDS * (1 - (limit - self.hits) / self.previous)
            wait = free_at - elapsed
        return max(1, min(math.ceil(wait), int(WINDOW_SECONDS)))


class ApiKeyRateLimiter:
    """Requests per minute per API key, counted in PostgreSQL (sign-in throttles are in
    core/accounts/throttle.py)."""

    def __init__(self, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self._session_maker = session_maker

    async def count(self, connection: AsyncConnection, key_id: uuid.UUID) -> WindowCount:
        """Count one request of `key_id` on `connection` (which must be in autocommit)."""
        hits, previous, elapsed = (await connection.execute(_BUMP, {"key_id": key_id})).one()
        return WindowCount(int(hits), int(previous), float(elapsed))

    async def check(
        self, connection: AsyncConnection, key_id: uuid.UUID, limit_per_minute: int | None
    ) -> int | None:
        """Record one request; None when allowed, else the seconds until a slot frees."""
        if not limit_per_minute or limit_per_minute <= 0:
            return None
        return (await self.count(connection, key_id)).retry_after(limit_per_minute)

    @staticmethod
    def decide(count: WindowCount | None, limit_per_minute: int | None) -> int | None:
        """The decision on a request counted by the key lookup itself
        (core/accounts/api_key_lookup.py); None (allowed) when nothing was counted."""
        if not limit_per_minute or limit_per_minute <= 0 or count is None:
            return None
        return count.retry_after(limit_per_minute)


class LastUsedThrottle:
    """Writes `api_keys.last_used_at` at most once per `interval` per key and process.

    Per process on purpose: N API processes write it at most N times per interval (the UPDATE
    itself skips a fresh value), and its memory holds at most one entry per key that
    authenticated, never one per credential an attacker tried.

    Its own short transaction, never the request's: an UPDATE there would hold the key row's
    lock for the whole request and serialise every concurrent request of that key. The write
    runs as a background task the request does not await: awaiting it would make each request
    hold two pooled connections at once, and a burst of keys refreshing together would then
    exhaust the pool and stall every request until the pool timeout.
    """

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        *,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_maker = session_maker
        self._interval = interval_seconds
        self._clock = clock
        self._last: dict[uuid.UUID, float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def touch(self, key_id: uuid.UUID) -> None:
        now = self._clock()
        last = self._last.get(key_id)
        if last is not None and now - last < self._interval:
            return
        self._last[key_id] = now
        task = asyncio.create_task(self._write(key_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the writes in flight (at shutdown, and in tests)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _write(self, key_id: uuid.UUID) -> None:
        try:
            async with self._session_maker() as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == key_id,
                        or_(
                            ApiKey.last_used_at.is_(None),
                            ApiKey.last_used_at < func.now() - timedelta(seconds=self._interval),
                        ),
                    )
                    .values(last_used_at=func.now())
                )
                await session.commit()
        except Exception:
            # Best effort: a missed refresh is retried after the next interval.
            self._last.pop(key_id, None)
            log.warning("could not refresh last_used_at for API key %s", key_id, exc_info=True)
