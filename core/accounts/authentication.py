"""Resolving a bearer credential (an API key or a session token) into a Principal."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.accounts import security
from core.accounts.api_key_lookup import resolve_and_count
from core.accounts.context import utcnow
from core.accounts.key_leases import KeyLeases
from core.accounts.rate_limit import ApiKeyRateLimiter, LastUsedThrottle, WindowCount
from core.accounts.repository import session_auth_row
from core.accounts.scopes import effective_scopes
from core.driver import HeldConnection, ReadSource, read_connection
from core.principal import Principal
from forgeline.errors import RateLimited, Unauthorized
from forgeline.statuses.accounts import OrgRole

# API keys whose creator left the organization keep no more power than a member.
ORPHAN_KEY_ROLE = OrgRole.MEMBER


async def authenticate_bearer(
    session: ReadSource,
    token: str,
    *,
    rate_limiter: ApiKeyRateLimiter,
    last_used: LastUsedThrottle,
    leases: KeyLeases | None = None,
) -> Principal:
    """`leases`: this process's leases of busy API keys (core/accounts/key_leases.py); without
    them every request of a key is looked up and counted on its own."""
    if security.looks_like_api_key(token):
        return await _authenticate_api_key(session, token, rate_limiter, last_used, leases)
    if token.startswith(security.SESSION_TOKEN_PREFIX):
        return await _authenticate_session(session, token)
    raise Unauthorized("Unrecognised bearer token")


@contextlib.asynccontextmanager
async def _autocommit(
    session: ReadSource,
) -> AsyncIterator[AsyncConnection | HeldConnection]:
    """Where an API key is looked up and counted: the request's connection when it is in
    autocommit (reads), else a pooled autocommit connection of its own, returned before the
    session takes one (a request then never holds two). Either way the rate-limit row lock
    lasts one statement, never the request."""
    if isinstance(session, HeldConnection):  # a hot read's bare autocommit connection
        yield session
        return
    held = read_connection(session)
    if held is not None:
        yield held
        return
    if session.in_transaction():
        connection = await session.connection()
        if connection.sync_connection is not None and (
            connection.sync_connection.get_execution_options().get("isolation_level")
            == "AUTOCOMMIT"
        ):
            yield connection
            return
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as own:
        yield await own.execution_options(isolation_level="AUTOCOMMIT")


async def _authenticate_api_key(
    session: ReadSource,
    raw: str,
    rate_limiter: ApiKeyRateLimiter,
    last_used: LastUsedThrottle,
    leases: KeyLeases | None,
) -> Principal:
    # Format and checksum first: typos and forgeries never cost a database lookup.
    if not security.api_key_well_formed(raw):
        raise Unauthorized("Malformed API key")
    key_hash = security.sha256_hex(raw)
    counted = 1
    if leases is not None:
        # A busy key's request on a slot this process already counted: no round trip.
        granted = leases.take(key_hash, utcnow())
        if granted is not None:
            return await _admit(
                granted.principal, granted.count, granted.per_minute, rate_limiter, last_used
            )
        counted = leases.block_size(key_hash)
    async with _autocommit(session) as connection:
        # One round trip: key row + creator's membership role + organization, and this request
        # (or a lease's block of requests) counted in the key's rate window when the secret
        # matches (see api_key_lookup).
        found = await resolve_and_count(
            connection, raw[: security.DISPLAY_PREFIX_LENGTH], key_hash, counted
        )
    if found is None or not security.constant_time_equal(found.row["key_hash"], key_hash):
        raise Unauthorized("Invalid API key")
    key = found.row
    if key["revoked_at"] is not None:
        raise Unauthorized("API key has been revoked")
    if key["expires_at"] is not None and key["expires_at"] <= utcnow():
        raise Unauthorized("API key has expired")
    role: str = ORPHAN_KEY_ROLE
    if key["created_by_user_id"] is not None:
        if key["creator_role"] is None:
            raise Unauthorized("API key belongs to a user who is no longer a member")
        role = key["creator_role"]
    key_id: uuid.UUID = key["id"]
    per_minute: int = key["rate_limit_per_minute"]
    principal = Principal(
        organization_id=key["organization_id"],
        user_id=None,
        api_key_id=key_id,
        role=role,
        scopes=effective_scopes(role, key["scopes"]),
    )
    count = found.count
    if leases is not None and count is not None:
        leases.store(
            key_hash,
            principal,
            per_minute=per_minute,
            expires_at=key["expires_at"],
            count=count,
            counted=counted,
        )
        count = leases.first_count(count, counted)
    return await _admit(principal, count, per_minute, rate_limiter, last_used)


async def _admit(
    principal: Principal,
    count: WindowCount | None,
    per_minute: int,
    rate_limiter: ApiKeyRateLimiter,
    last_used: LastUsedThrottle,
) -> Principal:
    """The rate-limit decision on the request's count, then its key marked used."""
    retry_after = rate_limiter.decide(count, per_minute)
    if retry_after is not None:
        raise RateLimited(
            f"API key rate limit of {per_minute} requests per minute exceeded",
            retry_after=retry_after,
        )
    assert principal.api_key_id is not None
    await last_used.touch(principal.api_key_id)
    return principal


async def _authenticate_session(session: ReadSource, raw: str) -> Principal:
    # One round trip: session row + user + membership role in the session's organization.
    row = await session_auth_row(session, security.sha256_hex(raw))
    if row is None or row["revoked_at"] is not None:
        raise Unauthorized("Invalid or revoked session")
    if row["expires_at"] <= utcnow():
        raise Unauthorized("Session has expired; sign in again")
    if row["organization_id"] is None:
        raise Unauthorized("Session has no organization; sign in again")
    if not row["is_active"]:
        raise Unauthorized("Invalid or revoked session")
    role: str | None = row["role"]
    if role is None:
        raise Unauthorized("No longer a member of this organization")
    return Principal(
        organization_id=row["organization_id"],
        user_id=row["user_id"],
        api_key_id=None,
        role=role,
        scopes=effective_scopes(role, None),
        session_id=row["id"],
    )
