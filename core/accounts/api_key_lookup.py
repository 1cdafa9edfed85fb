"""An API key resolved and counted in one round trip: the key row (by its unique prefix), its
creator's current membership role and its organization, and, when the presented secret hashes to
the stored hash and the key is usable, one request counted in its rate window (the same upsert,
clean-up and previous-window read as core/accounts/rate_limit.py's, on the same table).

A request with a wrong secret, or for a revoked, expired or orphaned key, counts nothing: a caller
who only knows a key's displayed prefix cannot spend its rate limit. Whether the request is let
through is still decided in Python (core/accounts/authentication.py), the hash compared there in
constant time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from core.accounts.key_leases import MAX_BLOCK
from core.accounts.rate_limit import WindowCount
from core.driver import HeldConnection, driver_fetch

_RESOLVE_AND_COUNT = """
WITH cred AS (
    SELECT k.id, k.organization_id, k.created_by_user_id, k.key_hash, k.scopes,
           k.rate_limit_per_minute, k.expires_at, k.revoked_at, m.role AS creator_role
    FROM api_keys k
    JOIN organizations o ON o.id = k.organization_id
    LEFT JOIN organization_members m
      ON m.organization_id = k.organization_id AND m.user_id = k.created_by_user_id
    WHERE k.key_prefix = $1
), bump AS (
    INSERT INTO api_key_rate_windows AS w (api_key_id, window_start, hits)
    SELECT cred.id,
           date_bin('60 seconds', clock_timestamp(), TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           $3::int
    FROM cred
    WHERE cred.key_hash = $2
      AND cred.revoked_at IS NULL
      AND (cred.expires_at IS NULL OR cred.expires_at > clock_timestamp())
      AND (cred.created_by_user_id IS NULL OR cred.creator_role IS NOT NULL)
      AND cred.rate_limit_per_minute > 0
    ON CONFLICT (api_key_id, window_start) DO UPDATE SET hits = w.hits + $3::int
    RETURNING w.api_key_id, w.window_start, w.hits
), expired AS (
    DELETE FROM api_key_rate_windows old USING bump
    WHERE old.api_key_id = bump.api_key_id
      AND old.window_start < bump.window_start - interval '60 s'
)
SELECT cred.*, bump.hits, COALESCE(prev.hits, 0) AS previous_hits,
       EXTRACT(EPOCH FROM clock_timestamp() - bump.window_start)::float8 AS elapsed
FROM cred
LEFT JOIN bump ON true
LEFT JOIN api_key_rate_windows prev
  ON prev.api_key_id = bump.api_key_id AND prev.window_start = bump.window_start - interval '60 s'
"""


@dataclass(frozen=True)
class KeyLookup:
    """The key row with its creator's role (`creator_role`), and the request's count in the
    key's rate window (None when nothing was counted: wrong secret, unusable key, no limit)."""

    row: dict[str, Any]
    count: WindowCount | None


async def resolve_and_count(
    connection: AsyncConnection | HeldConnection, prefix: str, key_hash: str, counted: int = 1
) -> KeyLookup | None:
    """None when no key has `prefix`. `connection` must not hold the request's transaction
    open: the window row's lock lasts this one statement. `counted` requests are counted (more
    than one: a lease's block, core/accounts/key_leases.py); the count returned is the last."""
    if not 1 <= counted <= MAX_BLOCK:
        raise ValueError(f"counted must be within 1..{MAX_BLOCK}")
    records = await driver_fetch(connection, _RESOLVE_AND_COUNT, prefix, key_hash, counted)
    if not records:
        return None
    row = dict(records[0])
    hits, previous, elapsed = row.pop("hits"), row.pop("previous_hits"), row.pop("elapsed")
    count = None if hits is None else WindowCount(int(hits), int(previous), float(elapsed))
    return KeyLookup(row, count)
