"""Per-organization build slots in Postgres: a counting semaphore with a first-come queue.

A run claims a slot before it builds and gives it back however it ends. Claims live in
`build_slot_claims`, and every change locks the organization's `build_slots` row first, so counting
holders, queueing and promoting never race. A waiting run sleeps in its workflow until a grant
signal names its claim; the claim is marked `grant_pending` in the same transaction that promotes
it, so a signal lost to a crash is sent again by whoever touches the semaphore next.

Plain SQL on the asyncpg connection: acquiring is one transaction of a few statements (~1 ms),
where a semaphore workflow costs a workflow-update round trip (~10-13 ms) per run and serializes
an organization's bursts on one workflow's history.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Takes the organization's lock (and records the limit of its current plan: an upgrade frees
# slots for the queue at once).
_LOCK_WITH_LIMIT = """
INSERT INTO build_slots (organization_key, slot_limit) VALUES ($1, $2)
ON CONFLICT (organization_key)
DO UPDATE SET slot_limit = EXCLUDED.slot_limit, updated_at = now()
"""

_LOCK = "SELECT slot_limit FROM build_slots WHERE organization_key = $1 FOR UPDATE"

# Waiters take the free slots in queue order; their grant is pending until it is delivered.
_PROMOTE = """
WITH free AS (
    SELECT greatest(
        b.slot_limit
        - (SELECT count(*) FROM build_slot_claims c
           WHERE c.organization_key = $1 AND c.holding),
        0
    ) AS n
    FROM build_slots b WHERE b.organization_key = $1
), promoted AS (
    SELECT run_workflow_id FROM build_slot_claims
    WHERE organization_key = $1 AND NOT holding
    ORDER BY seq
    LIMIT (SELECT n FROM free)
)
UPDATE build_slot_claims c
SET holding = true, grant_pending = true, granted_at = now()
FROM promoted p
WHERE c.organization_key = $1 AND c.run_workflow_id = p.run_workflow_id
"""

# The caller's claim: the one it has (a retried call; its own pending grant is answered here), or
# a new one that holds a slot when one is free and nobody waits, else joins the queue.
_CLAIM = """
WITH existing AS (
    UPDATE build_slot_claims SET grant_pending = false
    WHERE organization_key = $1 AND run_workflow_id = $2
    RETURNING seq, holding
), counts AS (
    SELECT count(*) FILTER (WHERE holding) AS holders,
           count(*) FILTER (WHERE NOT holding) AS waiting
    FROM build_slot_claims WHERE organization_key = $1
), inserted AS (
    INSERT INTO build_slot_claims (organization_key, run_workflow_id, holding, granted_at)
    SELECT $1, $2, free, CASE WHEN free THEN now() END
    FROM (SELECT c.waiting = 0 AND c.holders < $3 AS free FROM counts c) f
    WHERE NOT EXISTS (SELECT 1 FROM existing)
    RETURNING seq, holding
)
SELECT seq, holding FROM existing
UNION ALL
SELECT seq, holding FROM inserted
"""

_PENDING = """
SELECT run_workflow_id, seq FROM build_slot_claims
WHERE organization_key = $1 AND grant_pending
ORDER BY seq
"""

_DELIVERED = """
UPDATE build_slot_claims SET grant_pending = false
WHERE organization_key = $1 AND run_workflow_id = $2 AND seq = $3
"""

_DROP = "DELETE FROM build_slot_claims WHERE organization_key = $1 AND run_workflow_id = $2"

_STATE = """
SELECT b.slot_limit, c.run_workflow_id, c.holding
FROM build_slots b
LEFT JOIN build_slot_claims c ON c.organization_key = b.organization_key
WHERE b.organization_key = $1
ORDER BY c.seq
"""


@dataclass(frozen=True)
class Claim:
    seq: int
    holding: bool


@dataclass(frozen=True)
class PendingGrant:
    run_workflow_id: str
    seq: int


@dataclass(frozen=True)
class SlotState:
    limit: int
    holders: list[str]
    waiting: list[str]


async def _pending(conn: asyncpg.Connection, key: str) -> list[PendingGrant]:
    rows = await conn.fetch(_PENDING, key)
    return [PendingGrant(r["run_workflow_id"], r["seq"]) for r in rows]


async def acquire(
    conn: asyncpg.Connection, key: str, run_workflow_id: str, limit: int
) -> tuple[Claim, list[PendingGrant]]:
    """Hold a slot now or queue for one; idempotent (a holder holds, a waiter keeps its place).

    Also returns the other runs whose grant is still to be delivered.
    """
    async with conn.transaction():
        await conn.execute(_LOCK_WITH_LIMIT, key, max(1, limit))
        await conn.execute(_PROMOTE, key)
        row = await conn.fetchrow(_CLAIM, key, run_workflow_id, max(1, limit))
        pending = await _pending(conn, key)
    assert row is not None  # either the existing claim or the inserted one
    return Claim(seq=row["seq"], holding=row["holding"]), pending


async def release(conn: asyncpg.Connection, key: str, run_workflow_id: str) -> list[PendingGrant]:
    """Give the slot back (or leave the queue); the freed slots go to the queue's head.

    Idempotent: releasing what is not held changes nothing. Returns the grants to deliver.
    """
    async with conn.transaction():
        if await conn.fetchval(_LOCK, key) is None:
            return []  # this organization never claimed a slot
        await conn.execute(_DROP, key, run_workflow_id)
        await conn.execute(_PROMOTE, key)
        return await _pending(conn, key)


async def delivered(conn: asyncpg.Connection, key: str, grant: PendingGrant) -> None:
    await conn.execute(_DELIVERED, key, grant.run_workflow_id, grant.seq)


async def holders(conn: asyncpg.Connection, key: str) -> list[str]:
    return (await state(conn, key)).holders


async def state(conn: asyncpg.Connection, key: str) -> SlotState:
    """Limit, holders and the queue in order (empty when the organization never claimed)."""
    rows = await conn.fetch(_STATE, key)
    if not rows:
        return SlotState(limit=0, holders=[], waiting=[])
    claims = [r for r in rows if r["run_workflow_id"] is not None]
    return SlotState(
        limit=rows[0]["slot_limit"],
        holders=[r["run_workflow_id"] for r in claims if r["holding"]],
        waiting=[r["run_workflow_id"] for r in claims if not r["holding"]],
    )
