"""Queries for projects, repositories and environments, always scoped to one organization.

List queries are Core selects (hot lists pay for no ORM identity map), shaped for the
(organization_id, created_at, id) keyset indexes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.driver import DriverStatement, ReadSource, driver_row, driver_rows
from core.queries import core_execute, paginate
from db.models.projects import Environment, Project, Repository
from forgeline.statuses.deployments import DeploymentStatus
from forgeline.statuses.projects import ProjectStatus

PROJECT_COLUMNS = tuple(Project.__table__.c)
ENVIRONMENT_COLUMNS = tuple(Environment.__table__.c)
_projects = Project.__table__
_environments = Environment.__table__

# Hot single-row reads and the unfiltered first page of each list (by far the most requested
# shape): built once with bind parameters, compiled once for asyncpg, and sent through the
# request connection's driver (core/driver.py). Rows come back as dicts.
_GET_PROJECT_ROW = select(*PROJECT_COLUMNS).where(
    _projects.c.id == bindparam("project_id"),
    _projects.c.organization_id == bindparam("organization_id"),
)
_GET_ENVIRONMENT_ROW = (
    select(*ENVIRONMENT_COLUMNS)
    .join(_projects, _projects.c.id == _environments.c.project_id)
    .where(
        _environments.c.id == bindparam("environment_id"),
        _projects.c.organization_id == bindparam("organization_id"),
    )
)

# The first pages: the same statements paginate() would build, tenant and limit as parameters.
_FIRST_PROJECTS_PAGE = (
    select(*PROJECT_COLUMNS)
    .where(
        _projects.c.organization_id == bindparam("organization_id"),
        _projects.c.status != ProjectStatus.ARCHIVED,
    )
    .order_by(_projects.c.created_at.desc(), _projects.c.id.desc())
    .limit(bindparam("fetch"))
)
_FIRST_ENVIRONMENTS_PAGE = (
    select(*ENVIRONMENT_COLUMNS)
    .join(_projects, _projects.c.id == _environments.c.project_id)
    .where(
        _environments.c.project_id == bindparam("project_id"),
        _projects.c.organization_id == bindparam("organization_id"),
    )
    .order_by(_environments.c.created_at.desc(), _environments.c.id.desc())
    .limit(bindparam("fetch"))
)


_GET_PROJECT = DriverStatement(_GET_PROJECT_ROW)
_GET_ENVIRONMENT = DriverStatement(_GET_ENVIRONMENT_ROW)
_FIRST_PROJECTS = DriverStatement(_FIRST_PROJECTS_PAGE)
_FIRST_ENVIRONMENTS = DriverStatement(_FIRST_ENVIRONMENTS_PAGE)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_projects(
    session: ReadSource,
    organization_id: uuid.UUID,
    *,
    status: str | None,
    project_type: str | None,
    framework: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[Mapping[str, Any]]:
    if (status, project_type, framework, search, cursor) == (None, None, None, None, None):
        params = {"organization_id": organization_id, "fetch": limit + 1}
        return await driver_rows(session, _FIRST_PROJECTS, params)
    c = _projects.c  # table columns: a plain Core statement, no ORM compile state
    stmt: Select[Any] = select(*PROJECT_COLUMNS).where(c.organization_id == organization_id)
    if status is not None:
        stmt = stmt.where(c.status == status)
    else:
        stmt = stmt.where(c.status != ProjectStatus.ARCHIVED)
    if project_type is not None:
        stmt = stmt.where(c.project_type == project_type)
    if framework is not None:
        stmt = stmt.where(c.framework == framework)
    if search:
        pattern = f"%{_escape_like(search.lower())}%"
        stmt = stmt.where(
            or_(
                func.lower(c.name).like(pattern, escape="\\"),
                c.slug.like(pattern, escape="\\"),
            )
        )
    stmt = paginate(stmt, c.created_at, c.id, cursor=cursor, limit=limit)
    rows = (await core_execute(session, stmt)).mappings().all()
    return cast(Sequence[Mapping[str, Any]], rows)


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
    session: ReadSource, organization_id: uuid.UUID, project_id: uuid.UUID
) -> Mapping[str, Any] | None:
    params = {"project_id": project_id, "organization_id": organization_id}
    return await driver_row(session, _GET_PROJECT, params)


async def project_exists(
    session: ReadSource, organization_id: uuid.UUID, project_id: uuid.UUID
) -> bool:
    p = _projects.c
    stmt = select(p.id).where(p.id == project_id, p.organization_id == organization_id)
    return (await core_execute(session, stmt)).first() is not None


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
    session: ReadSource,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    env_type: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[Mapping[str, Any]]:
    # The join re-checks the tenant even though the caller already loaded the project: a list
    # must never be the one query that forgot it.
    if env_type is None and cursor is None:
        params = {"project_id": project_id, "organization_id": organization_id, "fetch": limit + 1}
        return await driver_rows(session, _FIRST_ENVIRONMENTS, params)
    e, p = _environments.c, _projects.c
    stmt: Select[Any] = (
        select(*ENVIRONMENT_COLUMNS)
        .join(_projects, p.id == e.project_id)
        .where(e.project_id == project_id, p.organization_id == organization_id)
    )
    if env_type is not None:
        stmt = stmt.where(e.env_type == env_type)
    stmt = paginate(stmt, e.created_at, e.id, cursor=cursor, limit=limit)
    rows = (await core_execute(session, stmt)).mappings().all()
    return cast(Sequence[Mapping[str, Any]], rows)


async def get_environment(
    session: AsyncSession,
    organization_id: uuid.UUID,
    environment_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Environment | None:
    stmt = (
        select(Environment)
        .join(Project, Project.id == Environment.project_id)
        .where(Environment.id == environment_id, Project.organization_id == organization_id)
    )
    if for_update:
        # The environment's row only: two deletes (or an update and a delete) at once queue
        # here, and the second finds nothing left instead of reporting a delete it did not do.
        stmt = stmt.with_for_update(of=Environment)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_environment_row(
    session: ReadSource, organization_id: uuid.UUID, environment_id: uuid.UUID
) -> Mapping[str, Any] | None:
    params = {"environment_id": environment_id, "organization_id": organization_id}
    return await driver_row(session, _GET_ENVIRONMENT, params)


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
LIVE_DEPLOYMENT_STATUSES: tuple[DeploymentStatus, ...] = (
    DeploymentStatus.PENDING,
    DeploymentStatus.QUEUED,
    DeploymentStatus.AWAITING_APPROVAL,
    DeploymentStatus.BUILDING,
    DeploymentStatus.DEPLOYING,
    DeploymentStatus.VERIFYING,
    DeploymentStatus.ACTIVE,
)


async def has_live_deployments(session: AsyncSession, environment_id: uuid.UUID) -> bool:
    from db.models.deployments import Deployment

    stmt = select(Deployment.id).where(
        Deployment.environment_id == environment_id,
        Deployment.status.in_(LIVE_DEPLOYMENT_STATUSES),
        Deployment.deleted_at.is_(None),
    )
    return (await session.execute(stmt.limit(1))).first() is not None
