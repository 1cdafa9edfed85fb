"""Per-API-key request rate limit (requests per minute, from the key row).

Storage choice: a per-process sliding-window log (a deque of request times per key). The
embedded stack and the default compose file run one API process, where this is exact, costs no
database round trip and takes no row lock on the hot path. With N API processes behind a load
balancer a key could get up to N x its limit; the step up then is a Postgres fixed window (one
`INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count` per request on a
(key_id, minute) row, in its own short transaction so the lock is not held for the request).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import ApiKey

WINDOW_SECONDS = 60.0

log = logging.getLogger(__name__)


class SlidingWindowRateLimiter:
    """Requests per minute per API key ID (sign-in throttles are in core/accounts/throttle.py)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[uuid.UUID | str, deque[float]] = {}

    def check(self, key_id: uuid.UUID | str, limit_per_minute: int | None) -> int | None:
        """Record one request; return None when allowed, else the seconds until a slot frees."""
        if not limit_per_minute or limit_per_minute <= 0:
            return None
        now = self._clock()
        hits = self._hits.setdefault(key_id, deque())
        while hits and hits[0] <= now - WINDOW_SECONDS:
            hits.popleft()
        if len(hits) >= limit_per_minute:
            return max(1, math.ceil(hits[0] + WINDOW_SECONDS - now))
        hits.append(now)
        return None

    def reset(self, key_id: uuid.UUID | str) -> None:
        self._hits.pop(key_id, None)


class LastUsedThrottle:
    """Writes `api_keys.last_used_at` at most once per `interval` per key and process.

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
