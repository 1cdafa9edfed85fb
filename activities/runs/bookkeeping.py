"""Bookkeeping that rides out a database outage: a stage attempt's own writes (open, log chunks,
close) are retried on their own schedule while PostgreSQL restarts, so an outage never costs the
stage an attempt nor runs the user's commands again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import activity

from db.session import database_unavailable

T = TypeVar("T")

# Long enough for a database restart or a failover; a database gone for longer fails the write
# (and the attempt) as before.
BOOKKEEPING_SECONDS = 120.0
FIRST_DELAY = 0.1
MAX_DELAY = 1.0  # also the heartbeat interval while waiting: well inside any heartbeat timeout


async def ride_out(
    what: str, write: Callable[[], Awaitable[T]], *, seconds: float = BOOKKEEPING_SECONDS
) -> T:
    """`write()`, retried while the database is unavailable (never on a bad statement), for up to
    `seconds`; the activity heartbeats while it waits so Temporal does not give up on it."""
    deadline = time.monotonic() + seconds
    delay = FIRST_DELAY
    while True:
        try:
            return await write()
        except Exception as exc:
            if not database_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            if activity.in_activity():
                activity.logger.warning("%s: database unavailable (%r); retrying", what, exc)
                activity.heartbeat()
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
