"""A project's git repository connection: connect or replace (URL checked against the network
rules, local paths confined, the access token encrypted), read and disconnect."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.principal import Principal
from core.projects import repository as queries
from core.projects.configs import repository_snapshot
from core.projects.models import RepositoryPut
from core.projects.service import flush, refuse_if_archived, require_project
from db.models.projects import Repository
from forgeline.crypto import encrypt_str
from forgeline.errors import ValidationFailed, found
from forgeline.local_paths import confine_local_path
from forgeline.settings import Settings
from forgeline.url_safety import validate_repository_url

URL_CHECK_TIMEOUT_SECONDS = 10


async def get_repository(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID
) -> Repository:
    project = await require_project(session, principal, project_id)
    return found(
        await queries.get_repository(session, project.id),
        "repository",
        "the project has no repository connected",
    )


async def put_repository(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    project_id: uuid.UUID,
    body: RepositoryPut,
) -> tuple[Repository, bool]:
    """Connect or replace the project's repository; returns (repository, created)."""
    project = await require_project(session, principal, project_id, for_update=True)
    refuse_if_archived(project)
    try:
        validated = await asyncio.wait_for(
            validate_repository_url(body.url, allow_local=settings.allow_local_repositories),
            timeout=URL_CHECK_TIMEOUT_SECONDS,
        )
    except TimeoutError as exc:
        raise ValidationFailed("repository host did not resolve in time", field="url") from exc
    if (validated.kind == "local") != (body.provider == "local"):
        raise ValidationFailed(
            "provider 'local' is for local paths only, and local paths need provider 'local'",
            field="provider",
        )
    if validated.kind == "local":
        confine_local_path(validated.url, settings, principal.organization_id, field="url")
    repo = await queries.get_repository(session, project.id)
    created = repo is None
    before = None if repo is None else repository_snapshot(repo)
    if repo is None:
        repo = Repository(id=uuid.uuid4(), project_id=project.id)
        session.add(repo)
    repo.provider = body.provider
    repo.url = validated.url
    repo.default_branch = body.default_branch
    if "access_token" in body.model_fields_set:
        token = body.access_token.get_secret_value() if body.access_token else ""
        repo.access_token_encrypted = encrypt_str(token, settings) if token else None
    after = repository_snapshot(repo)
    if not created and after == before and "access_token" not in body.model_fields_set:
        return repo, False
    await flush(session, "the project already has a repository")
    await session.refresh(repo)
    await write_audit(
        session,
        principal,
        origin,
        "repository.connected" if created else "repository.updated",
        "repository",
        repo.id,
        before,
        after,
        metadata={"project_id": str(project.id)},
    )
    return repo, created


async def delete_repository(
    session: AsyncSession, principal: Principal, origin: Origin, project_id: uuid.UUID
) -> None:
    project = await require_project(session, principal, project_id, for_update=True)
    repo = found(
        await queries.get_repository(session, project.id),
        "repository",
        "the project has no repository connected",
    )
    before = repository_snapshot(repo)
    await session.delete(repo)
    await session.flush()
    await write_audit(
        session,
        principal,
        origin,
        "repository.disconnected",
        "repository",
        repo.id,
        before,
        None,
        metadata={"project_id": str(project.id)},
    )
