"""The reconciler's activity: one pass of core.operations.reconciler."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client

from core.operations.reconciler import reconcile_closed_executions
from workflows.contracts import operations as contracts
from workflows.operations_models import ReconcileInput, ReconcileResult


class ReconcileActivities:
    def __init__(self, session_maker: async_sessionmaker[AsyncSession], temporal: Client) -> None:
        self._session_maker = session_maker
        self._temporal = temporal

    @contracts.RECONCILE_CLOSED_EXECUTIONS.implement
    async def reconcile_closed_executions(self, inp: ReconcileInput) -> ReconcileResult:
        result = await reconcile_closed_executions(
            self._temporal,
            self._session_maker,
            lookback=timedelta(seconds=inp.lookback_seconds),
            on_progress=activity.heartbeat,
        )
        return ReconcileResult(examined=result.examined, corrected=result.corrected)
