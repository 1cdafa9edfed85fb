"""Per-organization build slots in Postgres: a counting semaphore whose queue serves waiting
runs in trigger order (the run's `queued_at`, then the claim's `seq`; migration 0021).

A run claims a slot before it builds and gives it back however it ends. Claims live in
`build_slot_claims`; claiming and releasing are server-side functions (migration
0003_build_slots) that lock the organization's `build_slots` row first, so counting
holders, queueing and promoting never race. A waiting run sleeps in its workflow until a grant
signal names its claim; the claim is marked `grant_pending` in the same transaction that promotes
it, so a signal lost to a crash is sent again by whoever touches the semaphore next.

One round trip per claim or release, where a semaphore workflow costs a workflow update per run
and serializes an organization's bursts on one workflow's history (bench/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from db.session import driver_connection
from workflows.runs_models import GRANT_SIGNAL, SlotGrant

log = logging.getLogger(__name__)

_ACQUIRE = "SELECT * FROM build_slot_acquire($1, $2, $3, $4)"
_RELEASE = "SELECT * FROM build_slot_release($1, $2)"
# A plan change: the organization's limit now, and its queue promoted up to it (0005).
SET_LIMIT_SQL = "SELECT pending_runs, pending_seqs FROM build_slot_set_limit($1, $2)"
# Bounds each grant signal: a caller must not hang on an unreachable Temporal.
GRANT_RPC_TIMEOUT = timedelta(seconds=10)

_DELIVERED = """
UPDATE build_slot_claims SET grant_pending = false
WHERE organization_key = $1 AND run_workflow_id = $2 AND seq = $3
"""

_STATE = """
SELECT b.slot_limit, c.run_workflow_id, c.holding
FROM build_slots b
LEFT JOIN build_slot_claims c ON c.organization_key = b.organization_key
WHERE b.organization_key = $1
ORDER BY c.queued_at, c.seq
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


def _pending(row: asyncpg.Record) -> list[PendingGrant]:
    return [
        PendingGrant(run, seq)
        for run, seq in zip(row["pending_runs"], row["pending_seqs"], strict=True)
    ]


async def acquire(
    conn: asyncpg.Connection,
    key: str,
    run_workflow_id: str,
    limit: int,
    run_id: uuid.UUID | None = None,
) -> tuple[Claim, list[PendingGrant]]:
    """Hold a slot now or queue for one; idempotent (a holder holds, a waiter keeps its place).
    A new claim queues at its run's trigger time (`run_id`), else at the time it is made.

    Also returns the grants still to be delivered to other runs.
    """
    row = await conn.fetchrow(_ACQUIRE, key, run_workflow_id, max(1, limit), run_id)
    assert row is not None  # the function always answers one row
    return Claim(seq=row["claim_seq"], holding=row["claim_holding"]), _pending(row)


async def release(conn: asyncpg.Connection, key: str, run_workflow_id: str) -> list[PendingGrant]:
    """Give the slot back (or leave the queue); the freed slots go to the queue's head.

    Idempotent: releasing what is not held changes nothing. Returns the grants to deliver.
    """
    row = await conn.fetchrow(_RELEASE, key, run_workflow_id)
    assert row is not None
    return _pending(row)


async def set_limit(conn: asyncpg.Connection, key: str, limit: int) -> list[PendingGrant]:
    """The organization's slot limit is `limit` from now on: waiting claims are promoted up to
    it in queue order (a lower limit takes no slot back). Returns the grants to deliver."""
    row = await conn.fetchrow(SET_LIMIT_SQL, key, max(1, limit))
    assert row is not None
    return _pending(row)


def pending_of(runs: list[str], seqs: list[int]) -> list[PendingGrant]:
    return [PendingGrant(run, seq) for run, seq in zip(runs, seqs, strict=True)]


async def signal_grant(temporal: Client, grant: PendingGrant) -> bool:
    """Tell a waiting run its claim holds; False when the run is gone (closed or unknown)."""
    try:
        await temporal.get_workflow_handle(grant.run_workflow_id).signal(
            GRANT_SIGNAL, SlotGrant(seq=grant.seq), rpc_timeout=GRANT_RPC_TIMEOUT
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def deliver_grants(
    temporal: Client,
    session_maker: async_sessionmaker[AsyncSession],
    key: str,
    pending: list[PendingGrant],
) -> None:
    """Signal each promoted run its grant and mark it delivered. A run that no longer exists
    gives its slot back at once, to the next in line. A grant whose signal fails stays pending:
    whoever touches the semaphore next sends it again."""
    while pending:
        sent = await asyncio.gather(*(signal_grant(temporal, g) for g in pending))
        async with driver_connection(session_maker) as conn:
            gone = []
            for grant, was_sent in zip(pending, sent, strict=True):
                if was_sent:
                    await delivered(conn, key, grant)
                else:
                    gone.append(grant)
            pending = []
            for grant in gone:
                log.warning(
                    "build slot granted to %s, which no longer runs; slot freed",
                    grant.run_workflow_id,
                )
                pending = await release(conn, key, grant.run_workflow_id)


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


# The per-organization semaphore workflow these tables replaced.
RETIRED_WORKFLOW_TYPE = "BuildSlotsWorkflow"
# Each call of the retiring step at worker start: a slow visibility store must not hold it up.
RETIRE_RPC_TIMEOUT = timedelta(seconds=10)


async def retire_semaphore_workflows(client: Client) -> int:
    """Terminate the semaphore workflows of earlier versions still open on this namespace (one
    lingered 5 minutes after its organization's last run): no worker runs their type any more,
    and their history would only fail its workflow tasks. Returns how many were terminated."""
    retired = 0
    query = f'WorkflowType = "{RETIRED_WORKFLOW_TYPE}" AND ExecutionStatus = "Running"'
    try:
        async for execution in client.list_workflows(query, rpc_timeout=RETIRE_RPC_TIMEOUT):
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="build slots moved to Postgres", rpc_timeout=RETIRE_RPC_TIMEOUT
            )
            retired += 1
    except RPCError as exc:
        log.warning("could not retire old build-slot workflows: %s", exc)
    if retired:
        log.info("retired %d build-slot workflows of an earlier version", retired)
    return retired
