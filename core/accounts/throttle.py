"""Sign-in throttles shared by every API process, stored in PostgreSQL (`auth_throttles`).

Each limit is a fixed-window counter keyed by (scope, SHA-256 of the subject), bumped with one
`INSERT ... ON CONFLICT DO UPDATE ... RETURNING hits` in its own short transaction: concurrent
attempts on any process get distinct counts, so a limit of N lets exactly N through, and a
request that fails afterwards (wrong password, crash) has still been counted. An attempt is
counted *before* the password is checked and a successful sign-in clears the counters it may
clear, so the counters count failures without a second round trip.

Login, designed so that a stranger can slow an account down but not lock its owner out:
- per (account, client address): 10 attempts per 15 minutes; a success clears it. Someone
  guessing from elsewhere never spends the owner's allowance.
- per client address, whatever the account: 100 attempts per 15 minutes (password spraying
  across many e-mails). IPv6 addresses count per /64, what one host usually holds.
- per account, from all addresses: 50 attempts per hour. Past it, only addresses the account
  signed in from in the last 90 days ("known" addresses) may keep trying; a success from one
  clears the counter. A distributed guesser is slowed to 50 guesses an hour; the owner, from a
  known address, is not stopped.
Rows live one window; every bump deletes a batch of expired rows, so the table holds about one
row per key tried in the current window, whatever an attacker sends.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import AuthThrottle
from forgeline.errors import RateLimited

PRUNE_BATCH = 200


@dataclass(frozen=True)
class Limit:
    scope: str
    max_hits: int
    window: timedelta


LOGIN_PER_ACCOUNT_ADDRESS = Limit("login:account-address", 10, timedelta(minutes=15))
LOGIN_PER_ADDRESS = Limit("login:address", 100, timedelta(minutes=15))
LOGIN_PER_ACCOUNT = Limit("login:account", 50, timedelta(hours=1))
RESET_PER_ACCOUNT_ADDRESS = Limit("reset:account-address", 3, timedelta(minutes=15))
RESET_PER_ADDRESS = Limit("reset:address", 20, timedelta(hours=1))
# Bounds the reset links one mailbox receives (a stranger can use it up for an hour at most).
RESET_PER_ACCOUNT = Limit("reset:account", 10, timedelta(hours=1))
SIGNUP_PER_ADDRESS = Limit("signup:address", 10, timedelta(hours=1))
# Authenticated: only the session's holder reaches it. 10 codes per 15 minutes.
TOTP_PER_USER = Limit("totp:user", 10, timedelta(minutes=15))
KNOWN_ADDRESS_AGE = timedelta(days=90)


def client_address_key(host: str | None) -> str:
    """The address a per-address limit counts: IPv6 per /64, IPv4 as is."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def subject_digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Count:
    limit: Limit
    hits: int
    window_end: datetime
    now: datetime

    @property
    def exceeded(self) -> bool:
        return self.hits > self.limit.max_hits

    @property
    def retry_after(self) -> int:
        # `now` is this transaction's start; a concurrent attempt that committed the window
        # first may have started it later, so the wait is capped at one window.
        remaining = math.ceil((self.window_end - self.now).total_seconds())
        return max(1, min(remaining, math.ceil(self.limit.window.total_seconds())))


class AuthThrottles:
    """Counters in their own transactions (never the request's, which may roll back)."""

    def __init__(self, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self._session_maker = session_maker

    async def hit(self, *keys: tuple[Limit, str]) -> list[Count]:
        """Count one attempt against each (limit, subject digest); one transaction."""
        table = AuthThrottle.__table__  # the conflict's existing row, in SET
        counts: list[Count] = []
        async with self._session_maker() as session, session.begin():
            now: datetime = (await session.execute(select(func.now()))).scalar_one()
            for limit, subject in keys:
                window_end = now + limit.window
                values = insert(AuthThrottle).values(
                    scope=limit.scope,
                    subject=subject,
                    hits=1,
                    window_start=now,
                    expires_at=window_end,
                )
                expired = table.c.expires_at <= now
                stmt = values.on_conflict_do_update(
                    index_elements=[table.c.scope, table.c.subject],
                    set_={
                        # An expired window starts over; a live one counts up.
                        "hits": case((expired, 1), else_=table.c.hits + 1),
                        "window_start": case((expired, now), else_=table.c.window_start),
                        "expires_at": case((expired, window_end), else_=table.c.expires_at),
                    },
                ).returning(table.c.hits, table.c.expires_at)
                hits, expires_at = (await session.execute(stmt)).one()
                counts.append(Count(limit, int(hits), expires_at, now))
            await _prune(session, now, PRUNE_BATCH)
        return counts

    async def clear(self, session: AsyncSession, *keys: tuple[Limit, str]) -> None:
        """Forget counters after a success, in the caller's transaction: a sign-in that fails
        to commit leaves them as they were, and no second connection is held meanwhile."""
        for limit, subject in keys:
            await session.execute(
                delete(AuthThrottle).where(
                    AuthThrottle.scope == limit.scope, AuthThrottle.subject == subject
                )
            )

    async def prune(self, batch: int = PRUNE_BATCH) -> int:
        """Delete up to `batch` expired counters; returns how many went."""
        async with self._session_maker() as session, session.begin():
            now: datetime = (await session.execute(select(func.now()))).scalar_one()
            return await _prune(session, now, batch)


async def _prune(session: AsyncSession, now: datetime, batch: int) -> int:
    # SKIP LOCKED: concurrent attempts never queue behind each other's clean-up.
    doomed = (
        select(AuthThrottle.scope, AuthThrottle.subject)
        .where(AuthThrottle.expires_at <= now)
        .order_by(AuthThrottle.expires_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(AuthThrottle).where(tuple_(AuthThrottle.scope, AuthThrottle.subject).in_(doomed))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def raise_if_exceeded(counts: list[Count], message: str) -> None:
    over = [count for count in counts if count.exceeded]
    if over:
        raise RateLimited(message, retry_after=max(count.retry_after for count in over))
