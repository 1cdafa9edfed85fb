"""How a repository is reached for a clone: with its stored personal token, or, when it is
connected through the GitHub App on the operator's forge, with an installation token minted
for that one checkout (read access to that one repository), handed to git and never stored."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.integrations.check_runs import github_app
from db.models.projects import GitProviderConnection, Repository
from forgeline.crypto import decrypt_str
from forgeline.errors import DomainError
from forgeline.settings import Settings
from infra.forges import ForgeRateLimited, ForgeRejected, ForgeUnavailable
from infra.github_app import mint_repository_token

_FULL_NAME = re.compile(r"^([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")


class InstallationUnusable(
    DomainError, status=409, title="GitHub App installation unusable", slug="installation-unusable"
):
    """The installation cannot reach the repository (removed, suspended, no longer covering
    it, the App not configured, or GitHub refusing the token): a retry changes nothing."""


class InstallationTokenUnavailable(
    DomainError, status=502, title="The forge did not answer", slug="forge-unreachable"
):
    """GitHub did not mint the token now (an outage, a rate limit): worth retrying."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ClonePlan:
    """What a clone of the repository needs, read from the database (no forge call yet)."""

    url: str
    token_encrypted: str | None = field(default=None, repr=False)
    installation_id: int | None = None
    installation_revoked: bool = False
    installation_repositories: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloneAccess:
    """The remote and the credential of one clone; `operator_host`: the remote is on the forge
    the operator configured (see infra.git.operator_clone_target)."""

    url: str
    token: str | None = field(default=None, repr=False)
    operator_host: bool = False


async def clone_plan(session: AsyncSession, repository_id: uuid.UUID) -> ClonePlan | None:
    """The repository's URL, stored token and App installation (if it is connected through
    one); None when the repository is gone."""
    row = (
        await session.execute(
            select(
                Repository.url,
                Repository.access_token_encrypted,
                GitProviderConnection.installation_id,
                GitProviderConnection.revoked_at,
                GitProviderConnection.installation_repositories,
            )
            .outerjoin(GitProviderConnection, GitProviderConnection.id == Repository.connection_id)
            .where(Repository.id == repository_id)
        )
    ).one_or_none()
    if row is None:
        return None
    url, token_encrypted, installation_id, revoked_at, covered = row
    return ClonePlan(
        url=url,
        token_encrypted=token_encrypted,
        installation_id=int(installation_id) if installation_id is not None else None,
        installation_revoked=revoked_at is not None,
        installation_repositories=tuple(covered or ()),
    )


def app_repository(settings: Settings, plan: ClonePlan) -> str | None:
    """`owner/name` when the repository is reached through the App: connected through an
    installation and hosted on the operator's GitHub; None for every other repository."""
    if plan.installation_id is None:
        return None
    web = settings.github_web_url.rstrip("/") + "/"
    if not plan.url.startswith(web):
        return None
    found = _FULL_NAME.match(plan.url[len(web) :])
    if found is None:
        raise InstallationUnusable(
            "the repository URL names no owner/name repository on GitHub: connect it again"
        )
    return f"{found.group(1)}/{found.group(2)}"


async def clone_access(settings: Settings, plan: ClonePlan) -> CloneAccess:
    """The remote and credential of a clone starting now. An App-connected repository gets a
    token minted now, scoped to it with read access to its contents; nothing keeps it."""
    repository = app_repository(settings, plan)
    if repository is None:
        token = decrypt_str(plan.token_encrypted, settings) if plan.token_encrypted else None
        return CloneAccess(url=plan.url, token=token)
    assert plan.installation_id is not None
    if plan.installation_revoked:
        raise InstallationUnusable(
            f"the GitHub App installation {plan.installation_id} that connects {repository} "
            "was removed or suspended on GitHub: install the App again, or connect the "
            "repository with a token"
        )
    if repository not in plan.installation_repositories:
        raise InstallationUnusable(
            f"the GitHub App installation {plan.installation_id} no longer covers {repository}: "
            "pick it in the App's settings on GitHub"
        )
    app = github_app(settings)
    if app is None:
        raise InstallationUnusable(
            f"{repository} is connected through the GitHub App, which is not configured "
            "(FORGELINE_GITHUB_APP_ID, FORGELINE_GITHUB_APP_PRIVATE_KEY)"
        )
    try:
        token = await mint_repository_token(app, plan.installation_id, repository)
    except ForgeRateLimited as exc:
        raise InstallationTokenUnavailable(
            f"GitHub rate-limited the installation token for {repository}",
            retry_after=exc.retry_after,
        ) from None
    except ForgeUnavailable as exc:
        raise InstallationTokenUnavailable(
            f"GitHub did not mint an installation token for {repository}: {exc}"
        ) from None
    except ForgeRejected as exc:
        if exc.status_code == 404:
            detail = (
                f"GitHub no longer knows the App installation {plan.installation_id} "
                f"(removed?): install the App again for {repository}"
            )
        else:
            detail = f"GitHub refused an installation token to read {repository}: {exc}"
        raise InstallationUnusable(detail) from None
    # Rebuilt from the operator's URL and the checked name: nothing else of the stored URL.
    url = f"{settings.github_web_url.rstrip('/')}/{repository}.git"
    return CloneAccess(url=url, token=token, operator_host=True)
