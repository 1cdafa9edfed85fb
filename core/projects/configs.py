"""Stored configuration of projects and environments: sealing secrets on write, validating an
environment's provider config and its domains, and the masked views shown to callers and kept
in the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from core.projects.models import PROVIDER_CONFIGS, ProjectConfig, ProjectConfigOut
from db import app_hosts
from db.models.projects import Environment, Project, Repository
from forgeline import environment_variables as env_vars
from forgeline.errors import Conflict, ValidationFailed
from forgeline.settings import Settings


def project_config_data(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored project config with secret variable values masked."""
    data = dict(stored or {})
    data["environment_variables"] = env_vars.masked(data.get("environment_variables") or [])
    return data


def environment_config_data(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored environment config with secret variable values masked."""
    data = dict(stored or {})
    if "environment_variables" in data:
        data["environment_variables"] = env_vars.masked(data["environment_variables"] or [])
    return data


def store_project_config(
    config: ProjectConfig, previous: Mapping[str, Any] | None, settings: Settings
) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude_none=True)
    data["environment_variables"] = env_vars.seal(
        data.get("environment_variables", []),
        (previous or {}).get("environment_variables") or [],
        settings,
    )
    return data


def validate_environment_config(
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


async def claim_domains(
    session: AsyncSession, config: Mapping[str, Any], environment_id: uuid.UUID | None
) -> None:
    """A domain another environment (any tenant) already serves is a 409."""
    domains = [
        d for d in app_hosts.claimed_hosts(config) if d != config.get(app_hosts.HOSTNAME_KEY)
    ]
    taken = await app_hosts.first_taken(session, domains, excluding=environment_id)
    if taken is not None:
        raise Conflict(f"domain {taken!r} is already used by another environment", field="config")


# --------------------------------------------------------------------------- audit views


def project_snapshot(project: Project) -> dict[str, Any]:
    """Audit view: public fields only, secrets masked."""
    return {
        "name": project.name,
        "slug": project.slug,
        "description": project.description,
        "project_type": project.project_type,
        "framework": project.framework,
        "status": project.status,
        "config": ProjectConfigOut.model_validate(project_config_data(project.config)).model_dump(),
    }


def environment_snapshot(env: Environment) -> dict[str, Any]:
    return {
        "name": env.name,
        "env_type": env.env_type,
        "provider": env.provider,
        "config": environment_config_data(env.config),
        "is_protected": env.is_protected,
        "required_approvals": env.required_approvals,
        "auto_deploy": env.auto_deploy,
    }


def repository_snapshot(repo: Repository) -> dict[str, Any]:
    return {
        "provider": repo.provider,
        "url": repo.url,
        "default_branch": repo.default_branch,
        "credential_stored": repo.access_token_encrypted is not None,
    }
