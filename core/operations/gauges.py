"""The product gauges /metrics exports, read from PostgreSQL at scrape time: one cheap query per
group (each served by an index), cached for a few seconds so frequent scrapes cost nothing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# Served by the partial index on unfinished runs (status IN ('queued', 'running')).
ACTIVE_RUNS_SQL = text(
    "SELECT status, count(*) FROM pipeline_runs "
    "WHERE status IN ('queued', 'running') GROUP BY status"
)
# Index-only scan of ix_deployments_status; soft-deleted deployments still count by state.
DEPLOYMENTS_SQL = text("SELECT status, count(*) FROM deployments GROUP BY status")
# Slot keys are organization IDs (or `project-<id>`, which has no plan): per live plan, the slots
# held, the runs waiting and the slots allowed.
BUILD_SLOTS_SQL = text(
    """
    SELECT coalesce(p.slug, 'none') AS plan,
           coalesce(sum(c.in_use), 0) AS in_use,
           coalesce(sum(c.waiting), 0) AS waiting,
           sum(b.slot_limit) AS slot_limit
    FROM build_slots b
    LEFT JOIN (
        SELECT organization_key,
               count(*) FILTER (WHERE holding) AS in_use,
               count(*) FILTER (WHERE NOT holding) AS waiting
        FROM build_slot_claims GROUP BY organization_key
    ) c ON c.organization_key = b.organization_key
    LEFT JOIN subscriptions s ON s.organization_id::text = b.organization_key
        AND s.status IN ('trialing', 'active', 'past_due')
    LEFT JOIN plans p ON p.id = s.plan_id
    GROUP BY 1
    """
)


@dataclass(frozen=True)
class SlotUse:
    in_use: int
    waiting: int
    limit: int


@dataclass(frozen=True)
class GaugeSnapshot:
    runs_by_status: dict[str, int] = field(default_factory=dict)
    deployments_by_status: dict[str, int] = field(default_factory=dict)
    build_slots_by_plan: dict[str, SlotUse] = field(default_factory=dict)


async def read_gauges(session: AsyncSession) -> GaugeSnapshot:
    runs = {"queued": 0, "running": 0}
    runs.update({str(s): int(n) for s, n in (await session.execute(ACTIVE_RUNS_SQL)).all()})
    deployments = {str(s): int(n) for s, n in (await session.execute(DEPLOYMENTS_SQL)).all()}
    slots = {
        str(row.plan): SlotUse(int(row.in_use), int(row.waiting), int(row.slot_limit or 0))
        for row in (await session.execute(BUILD_SLOTS_SQL)).all()
    }
    return GaugeSnapshot(runs, deployments, slots)


class CachedGauges:
    """One snapshot per `ttl_seconds` per process; concurrent scrapes share one read."""

    def __init__(
        self, session_maker: async_sessionmaker[AsyncSession], ttl_seconds: float = 5.0
    ) -> None:
        self.session_maker = session_maker
        self.ttl_seconds = ttl_seconds
        self._snapshot: GaugeSnapshot | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> GaugeSnapshot:
        async with self._lock:
            if self._snapshot is None or time.monotonic() - self._read_at >= self.ttl_seconds:
                async with self.session_maker() as session:
                    self._snapshot = await read_gauges(session)
                self._read_at = time.monotonic()
            return self._snapshot
