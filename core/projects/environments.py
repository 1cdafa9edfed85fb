"""Environments of a project: create (plan limit, unique name, claimed domains), read, update
(protection rules changed only by approvers) and delete (never under a live deployment)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing.limits import enforce_limit
from core.deployments.config import APPROVER_ROLES
from core.driver import ReadSource
from core.principal import Principal
from core.projects import repository as queries
from core.projects.configs import (
    claim_domains,
    environment_snapshot,
    validate_environment_config,
)
from core.projects.models import EnvironmentCreate, EnvironmentUpdate
from core.projects.service import flush, refuse_if_archived, require_project
from db.models.projects import Environment
from forgeline.errors import Conflict, Forbidden, NotFound, ValidationFailed, found
from forgeline.settings import Settings
from forgeline.statuses.deployments import EnvironmentStatus

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
    origin: Origin,
    settings: Settings,
    project_id: uuid.UUID,
    body: EnvironmentCreate,
) -> Environment:
    project = await require_project(session, principal, project_id, for_update=True)
    refuse_if_archived(project)
    await enforce_limit(
        session, principal.organization_id, "environments_per_project", project_id=project.id
    )
    config = validate_environment_config(body.provider, body.config or {}, None, settings)
    await claim_domains(session, config, None)
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
        status=EnvironmentStatus.ACTIVE,
    )
    session.add(env)
    await flush(session, f"environment {body.name!r} already exists in this project")
    await session.refresh(env)
    await write_audit(
        session,
        principal,
        origin,
        "environment.created",
        "environment",
        env.id,
        None,
        environment_snapshot(env),
        metadata={"project_id": str(project.id)},
    )
    return env


async def list_environments(
    session: ReadSource,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    env_type: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[Mapping[str, Any]]:
    """A page (limit + 1 rows, newest first) of the project's environments; another
    organization's project is a 404."""
    rows = await queries.list_environments(
        session,
        principal.organization_id,
        project_id,
        env_type=env_type,
        cursor=cursor,
        limit=limit,
    )
    # The list query joins the project's organization, so rows imply access; only an empty
    # page needs the second look that tells "no environments" from "no such project".
    if not rows and not await queries.project_exists(
        session, principal.organization_id, project_id
    ):
        raise NotFound("project not found", resource_type="project")
    return rows


async def _require_environment(
    session: AsyncSession, principal: Principal, environment_id: uuid.UUID
) -> Environment:
    """The environment a change is about, its row locked until the change commits."""
    return found(
        await queries.get_environment(
            session, principal.organization_id, environment_id, for_update=True
        ),
        "environment",
    )


async def get_environment(
    session: ReadSource, principal: Principal, environment_id: uuid.UUID
) -> Mapping[str, Any]:
    return found(
        await queries.get_environment_row(session, principal.organization_id, environment_id),
        "environment",
    )


async def update_environment(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    environment_id: uuid.UUID,
    body: EnvironmentUpdate,
) -> Environment:
    env = await _require_environment(session, principal, environment_id)
    before = environment_snapshot(env)
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
        env.config = validate_environment_config(env.provider, body.config, env.config, settings)
        await claim_domains(session, env.config, env.id)
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
    after = environment_snapshot(env)
    if after == before:
        return env
    await flush(session, "an environment with that name already exists in this project")
    await session.refresh(env)
    await write_audit(
        session,
        principal,
        origin,
        "environment.updated",
        "environment",
        env.id,
        before,
        after,
        metadata={"project_id": str(env.project_id)},
    )
    return env


async def delete_environment(
    session: AsyncSession, principal: Principal, origin: Origin, environment_id: uuid.UUID
) -> None:
    env = await _require_environment(session, principal, environment_id)
    if await queries.has_live_deployments(session, env.id):
        # Deleting would cascade away a release that is running or in flight.
        raise Conflict(
            "the environment has a live or in-progress deployment; roll it back or tear it "
            "down first"
        )
    before = environment_snapshot(env)
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
        origin,
        "environment.deleted",
        "environment",
        env.id,
        before,
        None,
        metadata={"project_id": str(env.project_id)},
    )
