"""`prepare_pipeline_deployment`, the deploy stage's activity: core/deployments/pipeline_stage.py
does the work in one transaction; its refusals end the stage (never retried)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from core.deployments.pipeline_stage import prepare
from db.session import session_scope
from forgeline.errors import DomainError
from forgeline.settings import Settings
from infra.storage import ObjectStore
from workflows.contracts.deployments import PREPARE_PIPELINE_DEPLOYMENT
from workflows.deployment_models import DeploymentInput
from workflows.runs_models import DeployStageInput


class PipelineDeployActivities:
    def __init__(
        self,
        *,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
    ) -> None:
        self._settings = settings
        self._sessions = session_maker
        self._store = store

    @PREPARE_PIPELINE_DEPLOYMENT.implement
    async def prepare_pipeline_deployment(self, inp: DeployStageInput) -> DeploymentInput:
        """Validate the environment, enforce the monthly limit, create (or find) the row."""
        try:
            async with session_scope(self._sessions) as session:
                return await prepare(session, self._settings, self._store, inp)
        except DomainError as exc:
            details = exc.extra or None
            raise ApplicationError(
                exc.detail, details, type=type(exc).__name__, non_retryable=True
            ) from exc

    def all(self) -> list[Callable[..., Any]]:
        return [self.prepare_pipeline_deployment]
