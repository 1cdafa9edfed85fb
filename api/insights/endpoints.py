"""GET /v1/projects/{id}/insights?window=30d: the project's delivery insight over the window."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ProjectsReader, SessionDep
from core.insights.service import ProjectInsights, parse_window, project_insights
from core.projects.service import require_project

router = APIRouter(tags=["insights"])


@router.get("/projects/{project_id}/insights", response_model=ProjectInsights)
async def get_project_insights(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: ProjectsReader,
    window: Annotated[
        str, Query(max_length=8, description="`Nd`, N from 1 to 365", examples=["30d"])
    ] = "30d",
) -> ProjectInsights:
    days = parse_window(window)
    await require_project(session, principal, project_id)
    return await project_insights(session, project_id, days)
