"""Reading a project's tracked pull requests (pr_tracking), always through the caller's
organization: another tenant's project or pull request is a 404."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.principal import Principal
from core.projects.service import require_project
from db.models.integrations import PR_STATUSES, PullRequest
from forgeline.errors import NotFound, ValidationFailed

MAX_PAGE = 100


async def list_pull_requests(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    status: str | None = None,
    limit: int = 50,
) -> list[PullRequest]:
    """The project's pull requests, most recently updated first."""
    await require_project(session, principal, project_id)
    if status is not None and status not in PR_STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(PR_STATUSES)}")
    query = (
        select(PullRequest)
        .where(PullRequest.project_id == project_id)
        .order_by(PullRequest.updated_at.desc(), PullRequest.id)
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    if status is not None:
        query = query.where(PullRequest.status == status)
    return list(await session.scalars(query))


async def get_pull_request(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, number: int
) -> PullRequest:
    await require_project(session, principal, project_id)
    row = await session.scalar(
        select(PullRequest).where(
            PullRequest.project_id == project_id, PullRequest.pr_number == number
        )
    )
    if row is None:
        raise NotFound("pull request not found", resource_type="pull_request")
    return row
