"""The insights rollup's activity: one pass of core.insights.rollups."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.insights.rollups import rollup_active_projects
from workflows.contracts import operations as contracts
from workflows.operations_models import InsightsRollupInput, InsightsRollupResult


class InsightsRollupActivities:
    def __init__(self, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self._session_maker = session_maker

    @contracts.ROLLUP_INSIGHTS.implement
    async def rollup_insights(self, inp: InsightsRollupInput) -> InsightsRollupResult:
        projects = await rollup_active_projects(
            self._session_maker, horizon_days=inp.horizon_days, on_project=activity.heartbeat
        )
        return InsightsRollupResult(projects=projects)
