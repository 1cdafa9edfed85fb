"""GET /v1/projects/{id}/insights?window=30d and GET /v1/organizations/{id}/insights?window=30d:
delivery insight of a project, or of all of an organization's projects, over the window."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ProjectsReader, SessionDep
from core.insights.organization import OrganizationInsights, organization_insights
from core.insights.service import ProjectInsights, parse_window, project_insights
from core.projects.service import require_project
from forgeline.errors import NotFound

router = APIRouter(tags=["insights"])
Window = Annotated[str, Query(max_length=8, description="`Nd`, N from 1 to 365", examples=["30d"])]


@router.get("/projects/{project_id}/insights", response_model=ProjectInsights)
async def get_project_insights(
    project_id: uuid.UUID, session: SessionDep, principal: ProjectsReader, window: Window = "30d"
) -> ProjectInsights:
    days = parse_window(window)
    await require_project(session, principal, project_id)
    return await project_insights(session, project_id, days)


@router.get(
    "/organizations/{organization_id}/insights",
    response_model=OrganizationInsights,
    responses={404: {}, 422: {}},
)
async def get_organization_insights(
    organization_id: uuid.UUID,
    session: SessionDep,
    principal: ProjectsReader,
    window: Window = "30d",
) -> OrganizationInsights:
    """The project insight's metrics over all of the organization's projects, and one line
    per project with activity in the window. Only the caller's own organization exists."""
    days = parse_window(window)
    if organization_id != principal.organization_id:
        raise NotFound("organization not found", resource_type="organization")
    return await organization_insights(session, organization_id, days)
