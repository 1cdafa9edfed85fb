"""Per-API-key request rate limit (requests per minute, from the key row), shared by every API
process, and the throttled `last_used_at` refresh.

The count lives in PostgreSQL (`api_key_rate_windows`): one statement per request bumps the
key's row of the current minute (an atomic upsert, so concurrent requests on any process get
distinct counts), drops the key's rows older than the previous minute and reads the previous
minute's count. The decision is a sliding-window estimate (previous minute weighted by how much
of it is still inside the last 60 s, plus the current minute), so a burst across a minute
boundary cannot pass twice the limit. Every request is counted, refused ones included; a busy
key's requests are counted in blocks, each block before any of its requests is let through
(core/accounts/key_leases.py).

The statement runs on a connection in autocommit, so the row lock lasts that statement only and
never the request: the request's own connection when it already is (reads), else one of its own
taken before the request's unit of work holds any (see core/accounts/authentication.py).
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """Writes `api_keys.last_used_at` at most once per `interval` per key and process, every due
    key of a process in one statement.

    Per process on purpose: N API processes write it at most N times per interval (the UPDATE
    itself skips a fresh value), and its memory holds at most one entry per key that
    authenticated, never one per credential an attacker tried.

    Off the request path: a request only adds its key to the due set. One background flusher
    per process gathers the keys due within `batch_seconds` and refreshes them all with one
    UPDATE in its own short transaction, so a burst of many keys costs one pooled connection
    for one statement, not one connection per key competing with the requests for the pool
    (and never the request's transaction, whose row lock would serialise a key's requests).
    """

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        *,
        interval_seconds: float = 60.0,
        batch_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_maker = session_maker
        self._interval = interval_seconds
        self._batch_seconds = batch_seconds
        self._clock = clock
        self._last: dict[uuid.UUID, float] = {}
        self._due: set[uuid.UUID] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    async def touch(self, key_id: uuid.UUID) -> None:
        now = self._clock()
        last = self._last.get(key_id)
        if last is not None and now - last < self._interval:
            return
        self._last[key_id] = now
        self._due.add(key_id)
        if self._flusher is None or self._flusher.done():
            self._wake = asyncio.Event()
            self._flusher = asyncio.create_task(self._flush(self._wake))

    async def drain(self) -> None:
        """Write the due keys now and wait for it (at shutdown, and in tests)."""
        if self._wake is not None:
            self._wake.set()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self, wake: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), self._batch_seconds)
        # Keys that become due while a batch is written go out in the next statement.
        while self._due:
            batch, self._due = self._due, set()
            await self._write(batch)

    async def _write(self, key_ids: set[uuid.UUID]) -> None:
        try:
            async with self._session_maker() as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id.in_(sorted(key_ids)),
                        or_(
                            ApiKey.last_used_at.is_(None),
                            ApiKey.last_used_at < func.now() - timedelta(seconds=self._interval),
                        ),
                    )
                    .values(last_used_at=func.now())
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
        except Exception:
            # Best effort: a missed refresh is retried at each key's next request.
            for key_id in key_ids:
                self._last.pop(key_id, None)
            log.warning(
                "could not refresh last_used_at for %d API keys", len(key_ids), exc_info=True
            )
