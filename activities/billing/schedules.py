"""The monthly fan-out's activity: one page of due subscriptions started as billing runs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from core.billing import schedules
from workflows.billing_models import StartBillingRunsRequest, StartBillingRunsResult
from workflows.contracts import billing as contracts


class BillingScheduleActivities:
    def __init__(self, session_maker: async_sessionmaker[AsyncSession], temporal: Client) -> None:
        self._session_maker = session_maker
        self._temporal = temporal

    @contracts.START_DUE_BILLING_RUNS.implement
    async def start_due_billing_runs(
        self, request: StartBillingRunsRequest
    ) -> StartBillingRunsResult:
        return await schedules.start_due_billing_runs(
            self._session_maker, self._temporal, request, on_start=activity.heartbeat
        )
