"""The deployment activities that also announce what they recorded: waiting for approval, live,
rolled back, failed. Each announcement follows the committed projection write, once per
deployment and status, and never raises, so it cannot fail or delay the deployment."""

from __future__ import annotations

from activities.deployments.activities import DeploymentActivities
from core.notifications.sources import DEPLOYMENT_EVENTS, announce_deployment
from forgeline.statuses.deployments import DeploymentStatus
from workflows.contracts import deployments as contracts
from workflows.deployment_models import ActivationRequest, RollbackRecord, StatusUpdate


class NotifyingDeploymentActivities(DeploymentActivities):
    async def _announce(self, deployment_id: str, status: str) -> None:
        if status in DEPLOYMENT_EVENTS:
            await announce_deployment(
                self._temporal, self._sessions, self._settings, deployment_id, status
            )

    @contracts.RECORD_STATUS.implement
    async def record_status(self, upd: StatusUpdate) -> None:
        await super().record_status(upd)
        await self._announce(upd.deployment_id, upd.status)

    @contracts.ACTIVATE.implement
    async def activate(self, req: ActivationRequest) -> None:
        await super().activate(req)
        await self._announce(req.deployment_id, DeploymentStatus.ACTIVE)

    @contracts.RECORD_ROLLBACK.implement
    async def record_rollback(self, rec: RollbackRecord) -> None:
        await super().record_rollback(rec)
        # Without a previous healthy version there was nothing to roll back to: it failed.
        ended = DeploymentStatus.ROLLED_BACK if rec.previous else DeploymentStatus.FAILED
        await self._announce(rec.deployment_id, ended)
