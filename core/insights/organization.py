"""Insight of an organization over a window ending now: the project insight's metrics over all
of its projects (their aggregates merged exactly), plus one line per project with activity in
the window. Each project is read as its own insight is: rolled-up days from their rows, the
window's partial first day and today live."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.insights import aggregate, rollups
from core.insights.service import (
    Dora,
    Percentiles,
    WindowInsights,
    dora_of,
    percentiles,
    ratio,
    summarize,
    window_bounds,
)
from db.models.projects import Project


class ProjectBreakdown(BaseModel):
    project_id: uuid.UUID
    project_name: str
    project_slug: str
    runs: int
    success_rate: float | None
    # Over the runs of all of the project's pipelines.
    duration_seconds: Percentiles
    queue_seconds: Percentiles
    dora: Dora


class OrganizationInsights(WindowInsights):
    organization_id: uuid.UUID
    # Projects with runs or production changes in the window, most runs first.
    projects: list[ProjectBreakdown]


def _breakdown(project: Project, total: aggregate.Aggregate, window_days: int) -> ProjectBreakdown:
    pipelines = total["pipelines"].values()
    succeeded = sum(p["succeeded"] for p in pipelines)
    failed = sum(p["failed"] for p in pipelines)
    return ProjectBreakdown(
        project_id=project.id,
        project_name=project.name,
        project_slug=project.slug,
        runs=sum(p["total"] for p in pipelines),
        success_rate=ratio(succeeded, succeeded + failed),
        duration_seconds=percentiles([d for p in pipelines for d in p["durations"]]),
        queue_seconds=percentiles([q for p in pipelines for q in p["queue"]]),
        dora=dora_of(total, window_days),
    )


def _active(total: aggregate.Aggregate) -> bool:
    dora = total["dora"]
    return bool(total["pipelines"] or dora["deployments"] or dora["failures"])


async def organization_insights(
    session: AsyncSession,
    organization_id: uuid.UUID,
    window_days: int,
    *,
    now: datetime | None = None,
) -> OrganizationInsights:
    since, until = window_bounds(window_days, now)
    projects = list(
        await session.scalars(
            select(Project)
            .where(Project.organization_id == organization_id)
            .order_by(Project.created_at, Project.id)
        )
    )
    totals: list[aggregate.Aggregate] = []
    breakdown: list[ProjectBreakdown] = []
    for project in projects:
        total = await rollups.window_aggregate(session, project.id, since, until)
        if _active(total):
            totals.append(total)
            breakdown.append(_breakdown(project, total, window_days))
    breakdown.sort(key=lambda p: (-p.runs, p.project_name, str(p.project_id)))
    return OrganizationInsights(
        organization_id=organization_id,
        projects=breakdown,
        **summarize(aggregate.merge(totals), window_days, since, until),
    )
