"""GitHub App installations as connections of an organization: claiming one (the App proves it
can act there by minting a token and listing its repositories), connecting a project's
repository through it, and keeping its repository list current from installation webhooks."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.integrations.check_runs import github_app
from core.principal import Principal
from db.models.projects import GitProviderConnection, Project, Repository
from forgeline.crypto import decrypt_str
from forgeline.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from forgeline.settings import Settings
from infra.forges import ForgeRateLimited, ForgeRejected, ForgeUnavailable
from infra.github_app import (
    MAX_INSTALLATION_REPOSITORIES,
    installation_repositories,
    user_can_administer,
)


class AppNotConfigured(
    DomainError, status=409, title="GitHub App not configured", slug="github-app-not-configured"
): ...


class ForgeUnreachable(
    DomainError, status=502, title="The forge did not answer", slug="forge-unreachable"
): ...


async def claim_installation(
    session: AsyncSession, settings: Settings, principal: Principal, installation_id: int
) -> GitProviderConnection:
    """The organization's connection for the installation (created once; claiming it again
    refreshes its repositories). Another organization's installation is a conflict."""
    app = github_app(settings)
    if app is None:
        raise AppNotConfigured("set FORGELINE_GITHUB_APP_ID and FORGELINE_GITHUB_APP_PRIVATE_KEY")
    await _prove_access(session, settings, principal, installation_id)
    try:
        repositories = await installation_repositories(app, installation_id)
    except ForgeRejected as exc:
        raise NotFound("the GitHub App has no such installation") from exc
    except (ForgeUnavailable, ForgeRateLimited) as exc:
        raise ForgeUnreachable(str(exc)) from exc
    stmt = (
        insert(GitProviderConnection)
        .values(
            id=uuid.uuid4(),
            organization_id=principal.organization_id,
            user_id=principal.user_id,
            provider="github",
            installation_id=installation_id,
            installation_repositories=repositories,
        )
        .on_conflict_do_update(
            index_elements=["installation_id"],
            index_where=GitProviderConnection.installation_id.isnot(None),
            set_={"installation_repositories": repositories, "revoked_at": None},
            where=GitProviderConnection.organization_id == principal.organization_id,
        )
        .returning(GitProviderConnection.id)
    )
    connection_id = await session.scalar(stmt)
    if connection_id is None:
        raise Conflict("the installation is connected to another organization")
    connection = await session.get(GitProviderConnection, connection_id, populate_existing=True)
    assert connection is not None
    return connection


async def _prove_access(
    session: AsyncSession, settings: Settings, principal: Principal, installation_id: int
) -> None:
    """The claiming user's own GitHub account (linked by signing in with GitHub) must see the
    installation: knowing an installation's number proves nothing."""
    token_encrypted = None
    if principal.user_id is not None:
        token_encrypted = await session.scalar(
            select(GitProviderConnection.access_token_encrypted).where(
                GitProviderConnection.user_id == principal.user_id,
                GitProviderConnection.provider == "github",
                GitProviderConnection.organization_id.is_(None),
                GitProviderConnection.installation_id.is_(None),
                GitProviderConnection.revoked_at.is_(None),
            )
        )
    if token_encrypted is None:
        raise Forbidden(
            "sign in with GitHub (or link GitHub to your account) first: the installation is "
            "claimed by a GitHub user who can see it"
        )
    token = decrypt_str(token_encrypted, settings)
    try:
        allowed = await user_can_administer(settings.github_api_url, token, installation_id)
    except ForgeRejected:
        allowed = False
    except (ForgeUnavailable, ForgeRateLimited) as exc:
        raise ForgeUnreachable(str(exc)) from exc
    if not allowed:
        raise NotFound("your GitHub account has no such installation")


async def organization_installation(
    session: AsyncSession, principal: Principal, connection_id: uuid.UUID
) -> GitProviderConnection:
    connection = await session.scalar(
        select(GitProviderConnection).where(
            GitProviderConnection.id == connection_id,
            GitProviderConnection.organization_id == principal.organization_id,
            GitProviderConnection.installation_id.isnot(None),
        )
    )
    if connection is None:
        raise NotFound("GitHub App connection not found")
    return connection


async def connect_repository(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    project_id: uuid.UUID,
    connection_id: uuid.UUID,
    full_name: str,
) -> Repository:
    """The project's repository becomes `full_name`, reached through the installation: no
    token is stored, check runs report its runs."""
    connection = await organization_installation(session, principal, connection_id)
    if connection.revoked_at is not None:
        raise Conflict("the installation was removed or suspended on GitHub")
    if full_name not in connection.installation_repositories:
        raise ValidationFailed(
            f"the installation does not cover {full_name!r}: pick it in the App's settings"
        )
    project = await session.scalar(
        select(Project).where(
            Project.id == project_id, Project.organization_id == principal.organization_id
        )
    )
    if project is None:
        raise NotFound("project not found")
    repo = await session.scalar(select(Repository).where(Repository.project_id == project_id))
    if repo is None:
        repo = Repository(id=uuid.uuid4(), project_id=project_id, provider="github", url="")
        session.add(repo)
    repo.provider = "github"
    # On the operator's GitHub (GitHub Enterprise included): what a checkout mints a token for.
    repo.url = f"{settings.github_web_url.rstrip('/')}/{full_name}.git"
    repo.connection_id = connection.id
    repo.access_token_encrypted = None
    await session.flush()
    return repo


def _names(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [
        str(item["full_name"])[:300]
        for item in items[:MAX_INSTALLATION_REPOSITORIES]
        if isinstance(item, dict) and isinstance(item.get("full_name"), str)
    ]


async def record_installation_event(
    session: AsyncSession, event: str, payload: dict[str, Any]
) -> bool:
    """Apply an `installation` / `installation_repositories` delivery to the connection that
    holds the installation; False when no organization holds it (nothing to update)."""
    installation = payload.get("installation")
    installation_id = installation.get("id") if isinstance(installation, dict) else None
    if not isinstance(installation_id, int) or isinstance(installation_id, bool):
        raise ValidationFailed("the delivery names no installation")
    action = payload.get("action")
    holder = GitProviderConnection.installation_id == installation_id
    values: dict[str, Any]
    if event == "installation" and action in ("deleted", "suspend"):
        values = {"revoked_at": func.now()}
    elif event == "installation" and action in ("created", "unsuspend", "new_permissions_accepted"):
        values = {"revoked_at": None}
        if action == "created":
            values["installation_repositories"] = _names(payload.get("repositories"))
    elif event == "installation_repositories" and action in ("added", "removed"):
        current = await session.scalar(
            select(GitProviderConnection.installation_repositories).where(holder).with_for_update()
        )
        if current is None:
            return False
        added = _names(payload.get("repositories_added"))
        removed = set(_names(payload.get("repositories_removed")))
        merged = [n for n in dict.fromkeys([*current, *added]) if n not in removed]
        values = {"installation_repositories": merged[:MAX_INSTALLATION_REPOSITORIES]}
    else:
        return False
    result = await session.execute(
        update(GitProviderConnection)
        .where(holder)
        .values(**values)
        .returning(GitProviderConnection.id)
    )
    return result.first() is not None
