"""Commit statuses on GitHub (githubkit) and GitLab (its REST API over httpx) behind one
interface. Errors say what the caller should do: wait (rate limit, with the delay the forge
asked for), retry (outage), or give up (refused)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import httpx
from githubkit import GitHub, Response
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed

T = TypeVar("T")

Provider = Literal["github", "gitlab"]
State = Literal["pending", "running", "success", "failure", "cancelled"]

REQUEST_TIMEOUT_SECONDS = 10.0
# A forge asking for longer than this is asked again after this long.
MAX_RETRY_AFTER_SECONDS = 3600.0
# Without a Retry-After, a rate-limited request waits this long.
DEFAULT_RETRY_AFTER_SECONDS = 60.0

GITHUB_STATES: dict[State, Literal["error", "failure", "pending", "success"]] = {
    "pending": "pending",
    "running": "pending",
    "success": "success",
    "failure": "failure",
    "cancelled": "error",
}
GITLAB_STATES: dict[State, str] = {
    "pending": "pending",
    "running": "running",
    "success": "success",
    "failure": "failed",
    "cancelled": "canceled",
}


class ForgeRateLimited(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = min(max(retry_after, 0.0), MAX_RETRY_AFTER_SECONDS)


class ForgeUnavailable(Exception):
    """A 5xx, a timeout, a connection failure: retried with backoff."""


class ForgeRejected(Exception):
    """The forge refused the request for good (401, 404, 422...)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class CommitStatus:
    sha: str
    state: State
    context: str
    target_url: str
    description: str


class CommitStatusClient(Protocol):
    async def set_status(self, repository: str, status: CommitStatus) -> None: ...


def retry_after_seconds(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date), else from a rate-limit
    reset time (`X-RateLimit-Reset` / `RateLimit-Reset`, epoch seconds) when none remain."""
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value:
        if value.strip().isdigit():
            return float(value.strip())
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - now)
    for prefix in ("x-ratelimit", "ratelimit"):
        remaining = headers.get(f"{prefix}-remaining")
        reset = headers.get(f"{prefix}-reset")
        if remaining == "0" and reset and reset.strip().isdigit():
            return max(0.0, float(reset) - now)
    return None


def _classify(status_code: int, headers: httpx.Headers, what: str) -> Exception:
    if status_code in (403, 429):
        delay = retry_after_seconds(headers)
        if delay is not None or status_code == 429:
            return ForgeRateLimited(
                f"{what}: rate limited ({status_code})",
                DEFAULT_RETRY_AFTER_SECONDS if delay is None else delay,
            )
    if status_code >= 500 or status_code == 408:
        return ForgeUnavailable(f"{what}: the forge answered {status_code}")
    return ForgeRejected(
        f"{what}: the forge refused the request ({status_code})", status_code=status_code
    )


def github_client(api_url: str, token: str) -> GitHub[Any]:
    return GitHub(
        token,
        base_url=api_url,
        timeout=REQUEST_TIMEOUT_SECONDS,
        # Retries are the caller's (durable, and they honour Retry-After across restarts).
        auto_retry=False,
        http_cache=False,
        user_agent="forgeline",
    )


def github_repository(repository: str) -> tuple[str, str]:
    """`owner/name` split; anything else is refused before a request is made."""
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise ForgeRejected(f"{repository!r} is not an owner/name GitHub repository")
    return owner, name


async def github_call(what: str, request: Awaitable[Response[T]]) -> Response[T]:
    """A githubkit request with its failures as the forge errors (wait, retry, give up)."""
    try:
        return await request
    except RateLimitExceeded as exc:
        raise ForgeRateLimited(f"{what}: rate limited", exc.retry_after.total_seconds()) from exc
    except RequestFailed as exc:
        raise _classify(exc.response.status_code, exc.response.headers, what) from exc
    except RequestError as exc:
        # A failure of the request an auth flow makes first (a GitHub App's installation token).
        if isinstance(exc.exc, RequestFailed):
            response = exc.exc.response
            raise _classify(response.status_code, response.headers, what) from exc
        raise ForgeUnavailable(f"{what}: {type(exc.exc).__name__}") from exc


async def gitlab_request(
    what: str, method: str, url: str, token: str, **kwargs: Any
) -> httpx.Response:
    """A GitLab REST request; a transport failure is an outage, the answer is the caller's."""
    try:
        async with httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        ) as client:
            return await client.request(method, url, headers={"PRIVATE-TOKEN": token}, **kwargs)
    except httpx.HTTPError as exc:
        raise ForgeUnavailable(f"{what}: {type(exc).__name__}") from exc


class GitHubStatuses:
    """GitHub's statuses API (`POST /repos/{owner}/{repo}/statuses/{sha}`)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.github = github_client(api_url, token)

    async def set_status(self, repository: str, status: CommitStatus) -> None:
        owner, name = github_repository(repository)
        await github_call(
            "GitHub commit status",
            self.github.rest.repos.async_create_commit_status(
                owner,
                name,
                status.sha,
                state=GITHUB_STATES[status.state],
                target_url=status.target_url,
                description=status.description[:140],
                context=status.context,
            ),
        )


class GitLabStatuses:
    """GitLab's commit status API (`POST /projects/:id/statuses/:sha`)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def set_status(self, repository: str, status: CommitStatus) -> None:
        project = quote(repository, safe="")
        response = await gitlab_request(
            "GitLab commit status",
            "POST",
            f"{self.api_url}/projects/{project}/statuses/{status.sha}",
            self.token,
            json={
                "state": GITLAB_STATES[status.state],
                "name": status.context,
                "target_url": status.target_url,
                "description": status.description[:255],
            },
        )
        if response.is_success:
            return
        if response.status_code == 400 and "Cannot transition status" in response.text:
            return  # the commit already has this state for this context
        raise _classify(response.status_code, response.headers, "GitLab commit status")


def status_client(
    provider: str, *, token: str, github_api_url: str, gitlab_api_url: str
) -> CommitStatusClient:
    if provider == "github":
        return GitHubStatuses(github_api_url, token)
    if provider == "gitlab":
        return GitLabStatuses(gitlab_api_url, token)
    raise ForgeRejected(f"no commit status API for provider {provider!r}")
