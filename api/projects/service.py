"""Business rules for projects, their repository and environments; each mutation writes exactly
one audit row in the request's transaction (committed, or rolled back, at the edge)."""

from __future__ import annotations

import asyncio
import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from activities.deployments.intents import APPROVER_ROLES
from api.audit import write_audit
from api.billing.limits import enforce_limit
from api.deps import Principal
from api.projects import repository as queries
from api.projects.schemas import (
    PROVIDER_CONFIGS,
    EnvironmentCreate,
    EnvironmentOut,
    EnvironmentUpdate,
    ProjectConfig,
    ProjectConfigOut,
    ProjectCreate,
    ProjectOut,
    ProjectUpdate,
    RepositoryOut,
    RepositoryPut,
)
from db import app_hosts
from db.models.projects import Environment, Project, Repository
from forgeline import environment_variables as env_vars
from forgeline.crypto import encrypt_str
from forgeline.errors import Conflict, Forbidden, NotFound, ValidationFailed
from forgeline.local_paths import confine_local_path
from forgeline.settings import Settings
from forgeline.url_safety import validate_repository_url

SLUG_MAX = 63


# --------------------------------------------------------------------------- representations


def project_config_out(stored: Mapping[str, Any] | None) -> ProjectConfigOut:
    return ProjectConfigOut.model_validate(project_config_data(stored))


def project_config_data(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(stored or {})
    data["environment_variables"] = env_vars.masked(data.get("environment_variables") or [])
    return data


_PROJECT_FIELDS = tuple(name for name in ProjectOut.model_fields if name != "config")
_ENVIRONMENT_FIELDS = tuple(name for name in EnvironmentOut.model_fields if name != "config")


def project_data(row: Project | RowMapping) -> dict[str, Any]:
    """Response data of a project (secrets masked), from an ORM object or a Core row."""
    if isinstance(row, Mapping):
        data = {name: row[name] for name in _PROJECT_FIELDS}
        data["config"] = project_config_data(row["config"])
    else:
        data = {name: getattr(row, name) for name in _PROJECT_FIELDS}
        data["config"] = project_config_data(row.config)
    return data


def project_out(row: Project | RowMapping) -> ProjectOut:
    return ProjectOut.model_validate(project_data(row))


def environment_config_out(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(stored or {})
    if "environment_variables" in data:
        data["environment_variables"] = env_vars.masked(data["environment_variables"] or [])
    return data


def environment_data(row: Environment | RowMapping) -> dict[str, Any]:
    if isinstance(row, Mapping):
        data = {name: row[name] for name in _ENVIRONMENT_FIELDS}
        data["config"] = environment_config_out(row["config"])
    else:
        data = {name: getattr(row, name) for name in _ENVIRONMENT_FIELDS}
        data["config"] = environment_config_out(row.config)
    return data


def environment_out(row: Environment | RowMapping) -> EnvironmentOut:
    return EnvironmentOut.model_validate(environment_data(row))


def repository_out(repo: Repository) -> RepositoryOut:
    return RepositoryOut(
        id=repo.id,
        project_id=repo.project_id,
        provider=repo.provider,
        url=repo.url,
        default_branch=repo.default_branch,
        has_access_token=repo.access_token_encrypted is not None,
        last_commit_sha=repo.last_commit_sha,
        last_synced_at=repo.last_synced_at,
        created_at=repo.created_at,
        updated_at=repo.updated_at,
    )


def _project_snapshot(project: Project) -> dict[str, Any]:
    """Audit view: public fields only, secrets masked."""
    return {
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "project_type": project.project_type,
        "framework": project.framework,
        "status": project.status,
        "config": project_config_out(project.config).model_dump(),
    }


def _environment_snapshot(env: Environment) -> dict[str, Any]:
    return {
        "name": env.name,
        "env_type": env.env_type,
        "provider": env.provider,
        "config": environment_config_out(env.config),
        "is_protected": env.is_protected,
        "required_approvals": env.required_approvals,
        "auto_deploy": env.auto_deploy,
    }


def _repository_snapshot(repo: Repository) -> dict[str, Any]:
    return {
        "provider": repo.provider,
        "url": repo.url,
        "default_branch": repo.default_branch,
        "credential_stored": repo.access_token_encrypted is not None,
    }


# --------------------------------------------------------------------------- helpers


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:SLUG_MAX].strip("-")
    if len(slug) < 3:
        slug = f"{slug}-project" if slug else "project"
    return slug


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


def _store_project_config(
    config: ProjectConfig, previous: Mapping[str, Any] | None, settings: Settings
) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude_none=True)
    data["environment_variables"] = env_vars.seal(
        data.get("environment_variables", []),
        (previous or {}).get("environment_variables") or [],
        settings,
    )
    return data


def _validate_environment_config(
    provider: str,
    config: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    settings: Settings,
) -> dict[str, Any]:
    schema = PROVIDER_CONFIGS[provider]
    try:
        parsed = schema.model_validate(dict(config))
    except ValidationError as exc:
        raise ValidationFailed(
            f"config is not valid for provider {provider!r}",
            field="config",
            errors=[
                {"loc": ["config", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            ],
        ) from exc
    data = parsed.model_dump(mode="json", exclude_none=True)
    data["domains"] = sorted(set(data.get("domains") or []))
    apps_domain = settings.apps_domain.lower()
    for domain in app_hosts.claimed_hosts(data):
        if domain == apps_domain or domain.endswith("." + apps_domain):
            raise ValidationFailed(
                f"{domain!r} is under the apps domain {apps_domain!r}; use the generated host",
                field="config.domains",
            )
    if (previous or {}).get(app_hosts.HOSTNAME_KEY):
        # Assigned by the first Docker release; kept across config updates.
        data[app_hosts.HOSTNAME_KEY] = previous[app_hosts.HOSTNAME_KEY]  # type: ignore[index]
    data["environment_variables"] = env_vars.seal(
        data.get("environment_variables", []),
        (previous or {}).get("environment_variables") or [],
        settings,
    )
    return data


def _is_unique_violation(exc: IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "23505" or "unique" in str(exc.orig).lower()


async def _flush(session: AsyncSession, conflict_message: str) -> None:
    """Flush now so a unique race lost to a concurrent request is a 409, not a 500."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise Conflict(conflict_message) from exc
        raise


async def _claim_domains(
    session: AsyncSession, config: Mapping[str, Any], environment_id: uuid.UUID | None
) -> None:
    """A domain another environment (any tenant) already serves is a 409."""
    domains = [
        d for d in app_hosts.claimed_hosts(config) if d != config.get(app_hosts.HOSTNAME_KEY)
    ]
    taken = await app_hosts.first_taken(session, domains, excluding=environment_id)
    if taken is not None:
        raise Conflict(f"domain {taken!r} is already used by another environment", field="config")


async def _require_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, *, for_update: bool = False
) -> Project:
    project = await queries.get_project(
        session, principal.organization_id, project_id, for_update=for_update
    )
    if project is None:
        raise NotFound("project not found", resource_type="project")
    return project


def _refuse_if_archived(project: Project) -> None:
    if project.status == "archived":
        raise Conflict("the project is archived; unarchive it first")


# --------------------------------------------------------------------------- projects


async def create_project(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    settings: Settings,
    body: ProjectCreate,
) -> ProjectOut:
    org = principal.organization_id
    await enforce_limit(session, org, "projects")
    if body.slug is not None:
        if await queries.slug_taken(session, org, body.slug):
            raise Conflict(f"slug {body.slug!r} is already used in this organization", field="slug")
        slug = body.slug
    else:
        slug = await _unique_slug(session, org, slugify(body.name))
    project = Project(
        id=uuid.uuid4(),
        organization_id=org,
        created_by_user_id=principal.user_id,
        name=body.name,
        slug=slug,
        description=body.description,
        project_type=body.project_type,
        framework=body.framework,
        config=_store_project_config(body.config, None, settings),
        status="active",
    )
    session.add(project)
    await _flush(session, f"slug {slug!r} is already used in this organization")
    await session.refresh(project)
    await write_audit(
        session,
        principal,
        request,
        "project.created",
        "project",
        project.id,
        None,
        _project_snapshot(project),
    )
    return project_out(project)


async def get_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID
) -> ProjectOut:
    row = await queries.get_project_row(session, principal.organization_id, project_id)
    if row is None:
        raise NotFound("project not found", resource_type="project")
    return project_out(row)


async def update_project(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    settings: Settings,
    project_id: uuid.UUID,
    body: ProjectUpdate,
) -> ProjectOut:
    project = await _require_project(session, principal, project_id, for_update=True)
    _refuse_if_archived(project)
    before = _project_snapshot(project)
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
        project.config = _store_project_config(body.config, project.config, settings)
    after = _project_snapshot(project)
    if after == before:
        return project_out(project)  # nothing changed: not a mutation, no audit row
    await _flush(session, "slug is already used in this organization")
    await session.refresh(project)
    await write_audit(
        session, principal, request, "project.updated", "project", project.id, before, after
    )
    return project_out(project)


async def set_archived(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    project_id: uuid.UUID,
    *,
    archived: bool,
) -> ProjectOut:
    project = await _require_project(session, principal, project_id, for_update=True)
    if (project.status == "archived") == archived:
        return project_out(project)  # idempotent
    if not archived:
        # Archived projects do not count against the plan; bringing one back does.
        await enforce_limit(session, principal.organization_id, "projects")
    before = {"status": project.status, "archived_at": project.archived_at}
    project.status = "archived" if archived else "active"
    project.archived_at = datetime.now(UTC) if archived else None
    await _flush(session, "conflict")
    await session.refresh(project)
    await write_audit(
        session,
        principal,
        request,
        "project.archived" if archived else "project.unarchived",
        "project",
        project.id,
        before,
        {"status": project.status, "archived_at": project.archived_at},
    )
    return project_out(project)


# --------------------------------------------------------------------------- repositories


async def get_repository(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID
) -> RepositoryOut:
    project = await _require_project(session, principal, project_id)
    repo = await queries.get_repository(session, project.id)
    if repo is None:
        raise NotFound("the project has no repository connected", resource_type="repository")
    return repository_out(repo)


async def put_repository(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    settings: Settings,
    project_id: uuid.UUID,
    body: RepositoryPut,
) -> tuple[RepositoryOut, bool]:
    """Connect or replace the project's repository; returns (repository, created)."""
    project = await _require_project(session, principal, project_id, for_update=True)
    _refuse_if_archived(project)
    try:
        validated = await asyncio.wait_for(
            validate_repository_url(body.url, allow_local=settings.allow_local_repositories),
            timeout=10,
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
    before = None if repo is None else _repository_snapshot(repo)
    if repo is None:
        repo = Repository(id=uuid.uuid4(), project_id=project.id)
        session.add(repo)
    repo.provider = body.provider
    repo.url = validated.url
    repo.default_branch = body.default_branch
    if "access_token" in body.model_fields_set:
        token = body.access_token.get_secret_value() if body.access_token else ""
        repo.access_token_encrypted = encrypt_str(token, settings) if token else None
    after = _repository_snapshot(repo)
    if not created and after == before and "access_token" not in body.model_fields_set:
        return repository_out(repo), False
    await _flush(session, "the project already has a repository")
    await session.refresh(repo)
    await write_audit(
        session,
        principal,
        request,
        "repository.connected" if created else "repository.updated",
        "repository",
        repo.id,
        before,
        after,
        metadata={"project_id": str(project.id)},
    )
    return repository_out(repo), created


async def delete_repository(
    session: AsyncSession, principal: Principal, request: Request | None, project_id: uuid.UUID
) -> None:
    project = await _require_project(session, principal, project_id, for_update=True)
    repo = await queries.get_repository(session, project.id)
    if repo is None:
        raise NotFound("the project has no repository connected", resource_type="repository")
    before = _repository_snapshot(repo)
    await session.delete(repo)
    await session.flush()
    await write_audit(
        session,
        principal,
        request,
        "repository.disconnected",
        "repository",
        repo.id,
        before,
        None,
        metadata={"project_id": str(project.id)},
    )


# --------------------------------------------------------------------------- environments


# Environment config keys that are part of its approval rules.
APPROVAL_CONFIG_KEYS = ("approval_timeout_seconds",)


def _approval_rules(env: Environment) -> tuple[object, ...]:
    config = env.config or {}
    return (
        env.is_protected,
        env.required_approvals,
        *(config.get(key) for key in APPROVAL_CONFIG_KEYS),
    )


def _require_approver(principal: Principal) -> None:
    """Only the roles that approve deployments change what needs approving: otherwise a member
    could switch protection off, deploy, and switch it back on."""
    if principal.role not in APPROVER_ROLES:
        raise Forbidden(
            f"changing an environment's protection needs the role that approves deployments "
            f"({' or '.join(APPROVER_ROLES)}); role {principal.role!r} cannot",
            required_roles=list(APPROVER_ROLES),
        )


def _check_protection(is_protected: bool, required_approvals: int) -> None:
    if required_approvals > 0 and not is_protected:
        raise ValidationFailed(
            "required_approvals needs is_protected=true", field="required_approvals"
        )


async def create_environment(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    settings: Settings,
    project_id: uuid.UUID,
    body: EnvironmentCreate,
) -> EnvironmentOut:
    project = await _require_project(session, principal, project_id, for_update=True)
    _refuse_if_archived(project)
    await enforce_limit(
        session, principal.organization_id, "environments_per_project", project_id=project.id
    )
    config = _validate_environment_config(body.provider, body.config or {}, None, settings)
    await _claim_domains(session, config, None)
    is_protected = bool(body.is_protected)
    # A protected environment without a count means one approval, like GitHub environments.
    approvals = body.required_approvals
    if approvals is None:
        approvals = 1 if is_protected else 0
    _check_protection(is_protected, approvals)
    if await queries.environment_name_taken(session, project.id, body.name):
        raise Conflict(f"environment {body.name!r} already exists in this project", field="name")
    env = Environment(
        id=uuid.uuid4(),
        project_id=project.id,
        name=body.name,
        env_type=body.env_type,
        provider=body.provider,
        config=config,
        is_protected=is_protected,
        required_approvals=approvals,
        auto_deploy=bool(body.auto_deploy),
        status="active",
    )
    session.add(env)
    await _flush(session, f"environment {body.name!r} already exists in this project")
    await session.refresh(env)
    await write_audit(
        session,
        principal,
        request,
        "environment.created",
        "environment",
        env.id,
        None,
        _environment_snapshot(env),
        metadata={"project_id": str(project.id)},
    )
    return environment_out(env)


async def _require_environment(
    session: AsyncSession, principal: Principal, environment_id: uuid.UUID
) -> Environment:
    env = await queries.get_environment(session, principal.organization_id, environment_id)
    if env is None:
        raise NotFound("environment not found", resource_type="environment")
    return env


async def get_environment(
    session: AsyncSession, principal: Principal, environment_id: uuid.UUID
) -> EnvironmentOut:
    row = await queries.get_environment_row(session, principal.organization_id, environment_id)
    if row is None:
        raise NotFound("environment not found", resource_type="environment")
    return environment_out(row)


async def update_environment(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    settings: Settings,
    environment_id: uuid.UUID,
    body: EnvironmentUpdate,
) -> EnvironmentOut:
    env = await _require_environment(session, principal, environment_id)
    before = _environment_snapshot(env)
    rules_before = _approval_rules(env)
    fields = body.model_fields_set
    if "name" in fields and body.name is not None and body.name != env.name:
        if await queries.environment_name_taken(
            session, env.project_id, body.name, excluding=env.id
        ):
            raise Conflict(
                f"environment {body.name!r} already exists in this project", field="name"
            )
        env.name = body.name
    if "env_type" in fields and body.env_type is not None:
        env.env_type = body.env_type
    provider_changed = "provider" in fields and body.provider not in (None, env.provider)
    if provider_changed and "config" not in fields:
        raise ValidationFailed("changing the provider needs a config for it", field="config")
    if "provider" in fields and body.provider is not None:
        env.provider = body.provider
    if "config" in fields and body.config is not None:
        env.config = _validate_environment_config(env.provider, body.config, env.config, settings)
        await _claim_domains(session, env.config, env.id)
    if "is_protected" in fields and body.is_protected is not None:
        env.is_protected = body.is_protected
        if not body.is_protected and "required_approvals" not in fields:
            env.required_approvals = 0
    if "required_approvals" in fields:
        env.required_approvals = body.required_approvals or 0
    if "auto_deploy" in fields and body.auto_deploy is not None:
        env.auto_deploy = body.auto_deploy
    _check_protection(env.is_protected, env.required_approvals)
    if _approval_rules(env) != rules_before:
        _require_approver(principal)
    after = _environment_snapshot(env)
    if after == before:
        return environment_out(env)
    await _flush(session, "an environment with that name already exists in this project")
    await session.refresh(env)
    await write_audit(
        session,
        principal,
        request,
        "environment.updated",
        "environment",
        env.id,
        before,
        after,
        metadata={"project_id": str(env.project_id)},
    )
    return environment_out(env)


async def delete_environment(
    session: AsyncSession, principal: Principal, request: Request | None, environment_id: uuid.UUID
) -> None:
    env = await _require_environment(session, principal, environment_id)
    if await queries.has_live_deployments(session, env.id):
        # Deleting would cascade away a release that is running or in flight.
        raise Conflict(
            "the environment has a live or in-progress deployment; roll it back or tear it "
            "down first"
        )
    before = _environment_snapshot(env)
    await session.delete(env)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "the environment is still referenced (deployments); it cannot be deleted"
        ) from exc
    await write_audit(
        session,
        principal,
        request,
        "environment.deleted",
        "environment",
        env.id,
        before,
        None,
        metadata={"project_id": str(env.project_id)},
    )
