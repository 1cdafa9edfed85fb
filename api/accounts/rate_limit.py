"""Per-API-key request rate limit (requests per minute, from the key row).

Storage choice: a per-process sliding-window log (a deque of request times per key). The
embedded stack and the default compose file run one API process, where this is exact, costs no
database round trip and takes no row lock on the hot path. With N API processes behind a load
balancer a key could get up to N x its limit; the step up then is a Postgres fixed window (one
`INSERT ... ON CONFLICT DO UPDATE SET count = count + 1 RETURNING count` per request on a
(key_id, minute) row, in its own short transaction so the lock is not held for the request).
"""

from __future__ import annotations

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


class SlidingWindowRateLimiter:
    """Requests per minute per key (an API key ID, or a derived ID for login attempts)."""

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
    lock for the whole request and serialise every concurrent request of that key.
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

    async def touch(self, key_id: uuid.UUID) -> None:
        now = self._clock()
        last = self._last.get(key_id)
        if last is not None and now - last < self._interval:
            return
        self._last[key_id] = now
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
