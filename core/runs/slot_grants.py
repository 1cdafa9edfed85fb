"""Build-slot grants delivered to the runs they promote, and slots freed from holders that no
longer run: what claiming and releasing a slot do beyond the semaphore's own statements."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.runs import build_slots
from db.session import driver_connection

log = logging.getLogger(__name__)

# Bounds each holder check: a caller must not hang on an unreachable Temporal until the default
# RPC timeout.
SLOT_RPC_TIMEOUT = timedelta(seconds=10)
# Holder checks in flight at once when a run has to queue.
HOLDER_CHECKS = 20


class SlotGrants:
    def __init__(self, temporal: Client, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.temporal = temporal
        self.session_maker = session_maker

    async def settle(
        self, key: str, claim: build_slots.Claim, pending: list[build_slots.PendingGrant]
    ) -> None:
        """Deliver the grants still pending. A run that has to queue first checks that every
        holder still runs: a terminated run never releases, so its slot is freed here instead of
        blocking the organization for ever."""
        await self.deliver(key, pending)
        if not claim.holding:
            await self.free_gone_holders(key)

    async def release(self, key: str, run_workflow_id: str) -> None:
        """Give the slot back (or leave the queue); the next waiting run is granted it."""
        async with driver_connection(self.session_maker) as conn:
            pending = await build_slots.release(conn, key, run_workflow_id)
        await self.deliver(key, pending)

    async def deliver(self, key: str, pending: list[build_slots.PendingGrant]) -> None:
        """Signal each promoted run its grant (a run that is gone frees its slot at once)."""
        await build_slots.deliver_grants(self.temporal, self.session_maker, key, pending)

    async def free_gone_holders(self, key: str) -> None:
        async with driver_connection(self.session_maker) as conn:
            holders = await build_slots.holders(conn, key)
        limit = asyncio.Semaphore(HOLDER_CHECKS)

        async def gone(workflow_id: str) -> bool:
            async with limit:
                try:
                    desc = await self.temporal.get_workflow_handle(workflow_id).describe(
                        rpc_timeout=SLOT_RPC_TIMEOUT
                    )
                except RPCError as exc:
                    if exc.status == RPCStatusCode.NOT_FOUND:
                        return True
                    raise
                return desc.status != WorkflowExecutionStatus.RUNNING

        for workflow_id, is_gone in zip(
            holders, await asyncio.gather(*(gone(h) for h in holders)), strict=True
        ):
            if is_gone:
                log.warning("slot holder %s no longer runs; slot freed", workflow_id)
                await self.release(key, workflow_id)
