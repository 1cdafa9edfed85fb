"""The operator's GitHub App through githubkit: installation tokens minted per use (a fresh
token cache per client, so no token outlives the request it was minted for), the repositories
an installation covers, and check runs. Errors are the forge errors of `infra.forges`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy

from infra.forges import (
    REQUEST_TIMEOUT_SECONDS,
    ForgeRejected,
    github_call,
    github_client,
    github_repository,
)

CheckStatus = Literal["queued", "in_progress", "completed"]
CheckConclusion = Literal["success", "failure", "cancelled"]
# GitHub's limits on a check run's output fields.
MAX_SUMMARY_CHARS = 65_000
MAX_TEXT_CHARS = 65_000
MAX_INSTALLATION_REPOSITORIES = 5_000


@dataclass(frozen=True)
class GitHubApp:
    """The App's identity as the operator configured it."""

    api_url: str
    app_id: int
    private_key: str


@dataclass(frozen=True)
class CheckRunReport:
    name: str
    head_sha: str
    external_id: str
    details_url: str
    status: CheckStatus
    conclusion: CheckConclusion | None = None
    title: str = ""
    summary: str = ""
    text: str = ""


def _client(app: GitHubApp, auth: AppAuthStrategy | AppInstallationAuthStrategy) -> GitHub[Any]:
    """A client of the App's GitHub with its own token cache: the App's JWT and any installation
    token die with the client instead of being cached between uses."""
    return GitHub(
        auth,
        base_url=app.api_url,
        timeout=REQUEST_TIMEOUT_SECONDS,
        auto_retry=False,
        http_cache=False,
        cache_strategy=MemCacheStrategy(),
        user_agent="forgeline",
    )


def installation_client(app: GitHubApp, installation_id: int) -> GitHub[Any]:
    """A client acting as the installation; its token is minted on its first request."""
    if installation_id <= 0:
        raise ForgeRejected(f"{installation_id} is not a GitHub App installation")
    return _client(app, AppInstallationAuthStrategy(app.app_id, app.private_key, installation_id))


async def mint_repository_token(app: GitHubApp, installation_id: int, repository: str) -> str:
    """A fresh installation token that can read `owner/name`'s contents and nothing else, for
    one checkout: returned to the caller only, never cached or stored."""
    if installation_id <= 0:
        raise ForgeRejected(f"{installation_id} is not a GitHub App installation")
    _owner, name = github_repository(repository)
    github = _client(app, AppAuthStrategy(app.app_id, app.private_key))
    response = await github_call(
        "GitHub App installation token",
        github.rest.apps.async_create_installation_access_token(
            installation_id, repositories=[name], permissions={"contents": "read"}
        ),
    )
    body = response.json()
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise ForgeRejected("GitHub App installation token: the answer has no token")
    return token


async def installation_repositories(app: GitHubApp, installation_id: int) -> list[str]:
    """`owner/name` of every repository the installation covers (bounded)."""
    github = installation_client(app, installation_id)
    names: list[str] = []
    page = 1
    while len(names) < MAX_INSTALLATION_REPOSITORIES:
        response = await github_call(
            "GitHub App installation repositories",
            github.rest.apps.async_list_repos_accessible_to_installation(per_page=100, page=page),
        )
        body = response.json()
        repos = body.get("repositories") if isinstance(body, dict) else None
        if not isinstance(repos, list) or not repos:
            break
        names.extend(
            str(r["full_name"])[:300]
            for r in repos
            if isinstance(r, dict) and isinstance(r.get("full_name"), str)
        )
        if len(repos) < 100:
            break
        page += 1
    return names[:MAX_INSTALLATION_REPOSITORIES]


def _output(report: CheckRunReport) -> dict[str, str] | None:
    if not report.title:
        return None
    output = {"title": report.title[:255], "summary": report.summary[:MAX_SUMMARY_CHARS]}
    if report.text:
        output["text"] = report.text[-MAX_TEXT_CHARS:]
    return output


def _fields(report: CheckRunReport) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": report.name[:255],
        "details_url": report.details_url,
        "external_id": report.external_id,
        "status": report.status,
    }
    if report.conclusion is not None:
        fields["conclusion"] = report.conclusion
    if (output := _output(report)) is not None:
        fields["output"] = output
    return fields


async def find_check_run(
    app: GitHubApp, installation_id: int, repository: str, report: CheckRunReport
) -> int | None:
    """The check run of this report's run on the commit, if one was created already (its
    creation's answer may have been lost to a crash or a timeout)."""
    owner, name = github_repository(repository)
    github = installation_client(app, installation_id)
    response = await github_call(
        "GitHub check runs",
        github.rest.checks.async_list_for_ref(
            owner, name, report.head_sha, check_name=report.name[:255], filter_="all", per_page=100
        ),
    )
    body = response.json()
    runs = body.get("check_runs") if isinstance(body, dict) else None
    for run in runs if isinstance(runs, list) else []:
        if isinstance(run, dict) and run.get("external_id") == report.external_id:
            found = run.get("id")
            if isinstance(found, int):
                return found
    return None


async def create_check_run(
    app: GitHubApp, installation_id: int, repository: str, report: CheckRunReport
) -> int:
    """A new check run on the commit; its ID."""
    owner, name = github_repository(repository)
    github = installation_client(app, installation_id)
    response = await github_call(
        "GitHub check run",
        github.rest.checks.async_create(
            # The request body's TypedDict union is GitHub's; _fields builds one member.
            owner,
            name,
            data=cast(Any, {"head_sha": report.head_sha, **_fields(report)}),
        ),
    )
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise ForgeRejected("GitHub check run: the answer has no check run ID")
    return int(body["id"])


async def update_check_run(
    app: GitHubApp, installation_id: int, repository: str, check_run_id: int, report: CheckRunReport
) -> None:
    owner, name = github_repository(repository)
    github = installation_client(app, installation_id)
    await github_call(
        "GitHub check run",
        github.rest.checks.async_update(owner, name, check_run_id, data=cast(Any, _fields(report))),
    )


async def user_can_administer(api_url: str, user_token: str, installation_id: int) -> bool:
    """Whether the GitHub user behind `user_token` (their sign-in) sees the installation among
    theirs: what proves an organization may claim it."""
    github = github_client(api_url, user_token)
    page = 1
    while page <= 10:
        response = await github_call(
            "GitHub user installations",
            github.rest.apps.async_list_installations_for_authenticated_user(
                per_page=100, page=page
            ),
        )
        body = response.json()
        found = body.get("installations") if isinstance(body, dict) else None
        if not isinstance(found, list) or not found:
            return False
        if any(isinstance(i, dict) and i.get("id") == installation_id for i in found):
            return True
        if len(found) < 100:
            return False
        page += 1
    return False
