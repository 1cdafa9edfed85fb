"""Queries for projects, repositories and environments, always scoped to one organization.

List queries are Core selects (no ORM identity map: DESIGN.md measured the ORM 3-7x slower on
hot lists) shaped for the (organization_id, created_at, id) keyset indexes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.pagination import paginate
from db.models.projects import Environment, Project, Repository

PROJECT_COLUMNS = tuple(Project.__table__.c)
ENVIRONMENT_COLUMNS = tuple(Environment.__table__.c)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_projects(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    status: str | None,
    project_type: str | None,
    framework: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    stmt: Select[Any] = select(*PROJECT_COLUMNS).where(Project.organization_id == organization_id)
    if status is not None:
        stmt = stmt.where(Project.status == status)
    else:
        stmt = stmt.where(Project.status != "archived")
    if project_type is not None:
        stmt = stmt.where(Project.project_type == project_type)
    if framework is not None:
        stmt = stmt.where(Project.framework == framework)
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        stmt = stmt.where(
            or_(
                func.lower(Project.name).like(pattern, escape="\\"),
                Project.slug.like(pattern, escape="\\"),
            )
        )
    stmt = paginate(stmt, Project.created_at, Project.id, cursor=cursor, limit=limit)
    rows: Sequence[RowMapping] = (await session.execute(stmt)).mappings().all()
    return rows


async def get_project(
    session: AsyncSession,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Project | None:
    stmt = select(Project).where(
        Project.id == project_id, Project.organization_id == organization_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_project_row(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID
) -> RowMapping | None:
    stmt = select(*PROJECT_COLUMNS).where(
        Project.id == project_id, Project.organization_id == organization_id
    )
    return (await session.execute(stmt)).mappings().one_or_none()


async def project_exists(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID
) -> bool:
    stmt = select(Project.id).where(
        Project.id == project_id, Project.organization_id == organization_id
    )
    return (await session.execute(stmt)).first() is not None


async def slugs_with_prefix(
    session: AsyncSession, organization_id: uuid.UUID, prefix: str
) -> set[str]:
    stmt = select(Project.slug).where(
        Project.organization_id == organization_id,
        Project.slug.like(f"{_escape_like(prefix)}%", escape="\\"),
    )
    return set((await session.execute(stmt)).scalars().all())


async def slug_taken(
    session: AsyncSession,
    organization_id: uuid.UUID,
    slug: str,
    *,
    excluding: uuid.UUID | None = None,
) -> bool:
    stmt = select(Project.id).where(
        Project.organization_id == organization_id, Project.slug == slug
    )
    if excluding is not None:
        stmt = stmt.where(Project.id != excluding)
    return (await session.execute(stmt.limit(1))).first() is not None


async def get_repository(session: AsyncSession, project_id: uuid.UUID) -> Repository | None:
    stmt = select(Repository).where(Repository.project_id == project_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_environments(
    session: AsyncSession,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    env_type: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    # The join re-checks the tenant even though the caller already loaded the project: a list
    # must never be the one query that forgot it.
    stmt: Select[Any] = (
        select(*ENVIRONMENT_COLUMNS)
        .join(Project, Project.id == Environment.project_id)
        .where(Environment.project_id == project_id, Project.organization_id == organization_id)
    )
    if env_type is not None:
        stmt = stmt.where(Environment.env_type == env_type)
    stmt = paginate(stmt, Environment.created_at, Environment.id, cursor=cursor, limit=limit)
    rows: Sequence[RowMapping] = (await session.execute(stmt)).mappings().all()
    return rows


async def get_environment(
    session: AsyncSession, organization_id: uuid.UUID, environment_id: uuid.UUID
) -> Environment | None:
    stmt = (
        select(Environment)
        .join(Project, Project.id == Environment.project_id)
        .where(Environment.id == environment_id, Project.organization_id == organization_id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_environment_row(
    session: AsyncSession, organization_id: uuid.UUID, environment_id: uuid.UUID
) -> RowMapping | None:
    stmt = (
        select(*ENVIRONMENT_COLUMNS)
        .join(Project, Project.id == Environment.project_id)
        .where(Environment.id == environment_id, Project.organization_id == organization_id)
    )
    return (await session.execute(stmt)).mappings().one_or_none()


async def environment_name_taken(
    session: AsyncSession, project_id: uuid.UUID, name: str, *, excluding: uuid.UUID | None = None
) -> bool:
    stmt = select(Environment.id).where(
        Environment.project_id == project_id, Environment.name == name
    )
    if excluding is not None:
        stmt = stmt.where(Environment.id != excluding)
    return (await session.execute(stmt.limit(1))).first() is not None


# Deployment states in which something is running or about to run in the environment.
LIVE_DEPLOYMENT_STATUSES = (
    "pending",
    "queued",
    "awaiting_approval",
    "building",
    "deploying",
    "verifying",
    "active",
)


async def has_live_deployments(session: AsyncSession, environment_id: uuid.UUID) -> bool:
    from db.models.deployments import Deployment

    stmt = select(Deployment.id).where(
        Deployment.environment_id == environment_id,
        Deployment.status.in_(LIVE_DEPLOYMENT_STATUSES),
        Deployment.deleted_at.is_(None),
    )
    return (await session.execute(stmt.limit(1))).first() is not None
