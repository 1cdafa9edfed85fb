"""api_requests metering: authenticated requests counted in memory per (organization, minute) and
written as usage records by a background flush, never one database write per request.

Each (organization, minute) window is written once with the key
`api-requests:{org}:{minute}:{process instance}`, so a flush retried after an ambiguous failure
(the commit happened, the answer was lost) is a no-op, and two API processes never collide.
The periodic flush writes closed minutes only; the shutdown flush writes everything left. Should
a window receive counts after it was written (only possible after a shutdown flush), the later
counts go under `...:{instance}:{n}` instead of being dropped by the idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.billing.metering import record_usage, record_usage_batch
from db.session import session_scope

log = logging.getLogger("forgeline.api.metering")

FLUSH_INTERVAL_SECONDS = 5.0
# Windows written this long ago cannot receive counts any more; their bookkeeping is dropped.
_FORGET_AFTER = timedelta(minutes=5)

Window = tuple[uuid.UUID, datetime]


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


class ApiRequestMeter:
    """Per-process request counter; `count()` is synchronous and never touches the database."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        *,
        flush_interval: float = FLUSH_INTERVAL_SECONDS,
        instance_id: str | None = None,
    ) -> None:
        self._session_maker = session_maker
        self.flush_interval = flush_interval
        self.instance_id = instance_id or str(uuid.uuid4())
        self._counts: Counter[Window] = Counter()
        self._writes: dict[Window, int] = {}  # how many times each window was handed to a flush
        # Records handed to a flush but not yet committed; retried with the same keys.
        self._pending: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    def count(self, organization_id: uuid.UUID, *, at: datetime | None = None) -> None:
        self._counts[(organization_id, _minute(at or datetime.now(UTC)))] += 1

    def unflushed(self) -> int:
        """Requests counted but not yet committed (in memory or pending a retry)."""
        return sum(self._counts.values()) + sum(int(r["quantity"]) for r in self._pending)

    def _key(self, window: Window, part: int) -> str:
        organization_id, minute = window
        key = f"api-requests:{organization_id}:{minute:%Y-%m-%dT%H:%M}:{self.instance_id}"
        return key if part == 0 else f"{key}:{part}"

    def _take(self, *, everything: bool, now: datetime) -> None:
        """Move windows from the counter into pending records (no await: atomic for count())."""
        current = _minute(now)
        for window in list(self._counts):
            if not everything and window[1] >= current:
                continue  # still open: written once it closes (or at shutdown)
            quantity = self._counts.pop(window)
            part = self._writes.get(window, 0)
            self._writes[window] = part + 1
            self._pending.append(
                {
                    "organization_id": window[0],
                    "project_id": None,
                    "usage_type": "api_requests",
                    "quantity": quantity,
                    "idempotency_key": self._key(window, part),
                    "recorded_at": window[1],
                    "source_refs": {"instance": self.instance_id, "minute": window[1].isoformat()},
                }
            )
        for window in [w for w in self._writes if w[1] < current - _FORGET_AFTER]:
            del self._writes[window]

    async def flush(self, *, everything: bool = False, now: datetime | None = None) -> int:
        """Write closed windows (all windows with `everything`); returns requests committed.
        On a database error the records stay pending and the next flush retries them."""
        async with self._lock:
            self._take(everything=everything, now=now or datetime.now(UTC))
            if not self._pending:
                return 0
            batch = list(self._pending)
            try:
                try:
                    async with session_scope(self._session_maker) as session:
                        await record_usage_batch(session, batch)
                except IntegrityError:
                    # Not a duplicate (those are skipped): an organization deleted meanwhile.
                    # Row by row, so one vanished organization cannot block everyone's usage.
                    await self._write_one_by_one(batch)
            except Exception:
                log.exception(
                    "could not write %d api_requests usage records; will retry", len(batch)
                )
                return 0
            self._pending = self._pending[len(batch) :]
            return sum(int(r["quantity"]) for r in batch)

    async def _write_one_by_one(self, batch: list[dict[str, Any]]) -> None:
        for record in batch:
            try:
                async with session_scope(self._session_maker) as session:
                    await record_usage(session, **record)
            except IntegrityError:
                log.warning(
                    "dropped %s api requests of organization %s (no longer exists)",
                    record["quantity"],
                    record["organization_id"],
                )

    async def run(self) -> None:
        """The lifespan's background task: flush closed windows every `flush_interval` seconds."""
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:  # never let metering take the background task down
                log.exception("api_requests flush failed")

    async def close(self, task: asyncio.Task[None] | None) -> None:
        """Stop the background task, then write everything still counted (clean shutdown)."""
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        written = await self.flush(everything=True)
        if self.unflushed():
            log.error("shutting down with %d api requests not metered", self.unflushed())
        elif written:
            log.debug("metered %d api requests at shutdown", written)
