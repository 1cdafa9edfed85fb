"""Why a member may not decide on a deployment waiting for approval, in words to show them (the
same rules approvals.decide and the workflow enforce): None when they may."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from core.deployments import repository
from core.deployments.config import APPROVER_ROLES
from db.models.deployments import Deployment
from forgeline.statuses.deployments import DeploymentStatus


async def why_not_decide(
    session: AsyncSession,
    deployment: Deployment,
    *,
    member: uuid.UUID | None,
    role: str,
    may_deploy: bool,
) -> str | None:
    if deployment.status != DeploymentStatus.AWAITING_APPROVAL:
        return f"This deployment is {deployment.status}, not waiting for approval."
    if member is None:
        return "Approvals are made by members, not organization keys."
    roles = list(deployment.approver_roles or APPROVER_ROLES)
    if not may_deploy or role not in roles:
        return f"Your role ({role}) cannot approve; ask a member with role {' or '.join(roles)}."
    if await repository.triggering_person(session, deployment) == member:
        return "You requested this deployment; another member has to approve it."
    decided = {d.user_id for d in await repository.decisions(session, deployment.id)}
    if member in decided:
        return "You have already decided on this deployment."
    return None
