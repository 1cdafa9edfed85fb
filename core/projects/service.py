"""Projects: create (plan limit, unique slug), read, update, archive and unarchive. Each
mutation writes exactly one audit row in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing.limits import enforce_limit
from core.driver import ReadSource
from core.principal import Principal
from core.projects import repository as queries
from core.projects.configs import project_snapshot, store_project_config
from core.projects.models import ProjectCreate, ProjectUpdate
from db.models.projects import Project
from forgeline.errors import Conflict, found
from forgeline.settings import Settings
from forgeline.slugs import slug
from forgeline.statuses.projects import ProjectStatus

SLUG_MAX = 63
SLUG_MIN = 3


def project_slug(name: str) -> str:
    return slug(name, max_length=SLUG_MAX, fallback="project", min_length=SLUG_MIN)


async def _unique_slug(session: AsyncSession, organization_id: uuid.UUID, base: str) -> str:
    taken = await queries.slugs_with_prefix(session, organization_id, base)
    if base not in taken:
        return base
    for n in range(2, 10_000):
        suffix = f"-{n}"
        candidate = base[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
    return f"{base[:50].rstrip('-')}-{uuid.uuid4().hex[:8]}"


def _is_unique_violation(exc: IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "23505" or "unique" in str(exc.orig).lower()


async def flush(session: AsyncSession, conflict_message: str) -> None:
    """Flush now so a unique race lost to a concurrent request is a 409, not a 500."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise Conflict(conflict_message) from exc
        raise


async def require_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, *, for_update: bool = False
) -> Project:
    return found(
        await queries.get_project(
            session, principal.organization_id, project_id, for_update=for_update
        ),
        "project",
    )


def refuse_if_archived(project: Project) -> None:
    if project.status == ProjectStatus.ARCHIVED:
        raise Conflict("the project is archived; unarchive it first")


async def create_project(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    body: ProjectCreate,
) -> Project:
    org = principal.organization_id
    await enforce_limit(session, org, "projects")
    if body.slug is not None:
        if await queries.slug_taken(session, org, body.slug):
            raise Conflict(f"slug {body.slug!r} is already used in this organization", field="slug")
        made = body.slug
    else:
        made = await _unique_slug(session, org, project_slug(body.name))
    project = Project(
        id=uuid.uuid4(),
        organization_id=org,
        created_by_user_id=principal.user_id,
        name=body.name,
        slug=made,
        description=body.description,
        project_type=body.project_type,
        framework=body.framework,
        config=store_project_config(body.config, None, settings),
        status=ProjectStatus.ACTIVE,
    )
    session.add(project)
    await flush(session, f"slug {made!r} is already used in this organization")
    await session.refresh(project)
    await write_audit(
        session,
        principal,
        origin,
        "project.created",
        "project",
        project.id,
        None,
        project_snapshot(project),
    )
    return project


async def list_projects(
    session: ReadSource,
    principal: Principal,
    *,
    status: str | None,
    project_type: str | None,
    framework: str | None,
    search: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[Mapping[str, Any]]:
    """A page (limit + 1 rows, newest first) of the organization's projects; archived ones
    only when asked for by status."""
    return await queries.list_projects(
        session,
        principal.organization_id,
        status=status,
        project_type=project_type,
        framework=framework,
        search=search,
        cursor=cursor,
        limit=limit,
    )


async def get_project(
    session: ReadSource, principal: Principal, project_id: uuid.UUID
) -> Mapping[str, Any]:
    return found(
        await queries.get_project_row(session, principal.organization_id, project_id),
        "project",
    )


async def update_project(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    project_id: uuid.UUID,
    body: ProjectUpdate,
) -> Project:
    project = await require_project(session, principal, project_id, for_update=True)
    refuse_if_archived(project)
    before = project_snapshot(project)
    fields = body.model_fields_set
    if "slug" in fields and body.slug is not None and body.slug != project.slug:
        if await queries.slug_taken(
            session, principal.organization_id, body.slug, excluding=project.id
        ):
            raise Conflict(f"slug {body.slug!r} is already used in this organization", field="slug")
        project.slug = body.slug
    if "name" in fields and body.name is not None:
        project.name = body.name
    if "description" in fields:
        project.description = body.description
    if "project_type" in fields and body.project_type is not None:
        project.project_type = body.project_type
    if "framework" in fields:
        project.framework = body.framework
    if "status" in fields and body.status is not None:
        project.status = body.status
    if "config" in fields and body.config is not None:
        project.config = store_project_config(body.config, project.config, settings)
    after = project_snapshot(project)
    if after == before:
        return project  # nothing changed: not a mutation, no audit row
    await flush(session, "slug is already used in this organization")
    await session.refresh(project)
    await write_audit(
        session, principal, origin, "project.updated", "project", project.id, before, after
    )
    return project


async def set_archived(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    project_id: uuid.UUID,
    *,
    archived: bool,
) -> Project:
    project = await require_project(session, principal, project_id, for_update=True)
    if (project.status == ProjectStatus.ARCHIVED) == archived:
        return project  # idempotent
    if not archived:
        # Archived projects do not count against the plan; bringing one back does.
        await enforce_limit(session, principal.organization_id, "projects")
    before = {"status": project.status, "archived_at": project.archived_at}
    project.status = ProjectStatus.ARCHIVED if archived else ProjectStatus.ACTIVE
    project.archived_at = datetime.now(UTC) if archived else None
    await flush(session, "conflict")
    await session.refresh(project)
    await write_audit(
        session,
        principal,
        origin,
        "project.archived" if archived else "project.unarchived",
        "project",
        project.id,
        before,
        {"status": project.status, "archived_at": project.archived_at},
    )
    return project
