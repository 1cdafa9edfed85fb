"""The one comment Forgeline keeps on a pull request: GitHub issue comments (githubkit) and GitLab
merge request notes (its REST API over httpx) behind one interface. The comment carries a hidden
marker, so a comment created by an attempt that crashed before its ID was stored is found again
instead of posted twice. Errors are those of infra.forges: wait, retry, or give up."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

import httpx
from githubkit import GitHub
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed

from infra.forges import (
    REQUEST_TIMEOUT_SECONDS,
    ForgeRateLimited,
    ForgeRejected,
    ForgeUnavailable,
    _classify,
)

# Pages of 100 comments read when looking for the marker: a pull request with more than
# 2,000 comments gets a new one rather than an unbounded search.
MAX_PAGES = 20
MAX_BODY_CHARS = 60_000


class CommentGone(Exception):
    """The stored comment no longer exists (someone deleted it): post a new one."""


class PullRequestComments(Protocol):
    async def find(self, repository: str, number: int, marker: str) -> str | None: ...

    async def create(self, repository: str, number: int, body: str) -> str: ...

    async def update(self, repository: str, number: int, comment_id: str, body: str) -> None: ...


def _owner_name(repository: str) -> tuple[str, str]:
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise ForgeRejected(f"{repository!r} is not an owner/name GitHub repository")
    return owner, name


class GitHubComments:
    """`/repos/{owner}/{repo}/issues/{number}/comments` and `/issues/comments/{id}`."""

    def __init__(self, api_url: str, token: str) -> None:
        self.github = GitHub(
            token,
            base_url=api_url,
            timeout=REQUEST_TIMEOUT_SECONDS,
            auto_retry=False,
            http_cache=False,
            user_agent="forgeline",
        )

    async def _call(self, what: str, request: Any) -> Any:
        try:
            response = await request
        except RateLimitExceeded as exc:
            raise ForgeRateLimited(
                f"GitHub {what}: rate limited", exc.retry_after.total_seconds()
            ) from exc
        except RequestFailed as exc:
            if exc.response.status_code == 404 and what == "comment update":
                raise CommentGone(what) from exc
            raise _classify(
                exc.response.status_code, exc.response.headers, f"GitHub {what}"
            ) from exc
        except RequestError as exc:
            raise ForgeUnavailable(f"GitHub {what}: {type(exc.exc).__name__}") from exc
        return response.json()

    async def find(self, repository: str, number: int, marker: str) -> str | None:
        owner, name = _owner_name(repository)
        issues = self.github.rest.issues
        for page in range(1, MAX_PAGES + 1):
            found = await self._call(
                "comment list",
                issues.async_list_comments(owner, name, number, per_page=100, page=page),
            )
            if not isinstance(found, list):
                return None
            for comment in found:
                if isinstance(comment, dict) and marker in str(comment.get("body") or ""):
                    return str(comment.get("id"))
            if len(found) < 100:
                return None
        return None

    async def create(self, repository: str, number: int, body: str) -> str:
        owner, name = _owner_name(repository)
        created = await self._call(
            "comment",
            self.github.rest.issues.async_create_comment(
                owner, name, number, body=body[:MAX_BODY_CHARS]
            ),
        )
        return str(created["id"])

    async def update(self, repository: str, number: int, comment_id: str, body: str) -> None:
        owner, name = _owner_name(repository)
        if not comment_id.isdigit():
            raise CommentGone(f"comment id {comment_id!r}")
        await self._call(
            "comment update",
            self.github.rest.issues.async_update_comment(
                owner, name, int(comment_id), body=body[:MAX_BODY_CHARS]
            ),
        )


class GitLabNotes:
    """`/projects/:id/merge_requests/:iid/notes` and `.../notes/:note_id`."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token

    def _url(self, repository: str, number: int, suffix: str = "") -> str:
        project = quote(repository, safe="")
        return f"{self.api_url}/projects/{project}/merge_requests/{number}/notes{suffix}"

    async def _send(self, what: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            async with httpx.AsyncClient(
                timeout=REQUEST_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
            ) as client:
                response = await client.request(
                    method, url, headers={"PRIVATE-TOKEN": self.token}, **kwargs
                )
        except httpx.HTTPError as exc:
            raise ForgeUnavailable(f"GitLab {what}: {type(exc).__name__}") from exc
        if response.is_success:
            return response
        if response.status_code == 404 and what == "note update":
            raise CommentGone(what)
        raise _classify(response.status_code, response.headers, f"GitLab {what}")

    async def find(self, repository: str, number: int, marker: str) -> str | None:
        for page in range(1, MAX_PAGES + 1):
            response = await self._send(
                "note list",
                "GET",
                self._url(repository, number),
                params={"per_page": 100, "page": page, "sort": "asc"},
            )
            found = response.json()
            if not isinstance(found, list):
                return None
            for note in found:
                if isinstance(note, dict) and marker in str(note.get("body") or ""):
                    return str(note.get("id"))
            if len(found) < 100:
                return None
        return None

    async def create(self, repository: str, number: int, body: str) -> str:
        response = await self._send(
            "note", "POST", self._url(repository, number), json={"body": body[:MAX_BODY_CHARS]}
        )
        return str(response.json()["id"])

    async def update(self, repository: str, number: int, comment_id: str, body: str) -> None:
        if not comment_id.isdigit():
            raise CommentGone(f"note id {comment_id!r}")
        await self._send(
            "note update",
            "PUT",
            self._url(repository, number, f"/{comment_id}"),
            json={"body": body[:MAX_BODY_CHARS]},
        )


def comments_client(
    provider: str, *, token: str, github_api_url: str, gitlab_api_url: str
) -> PullRequestComments:
    if provider == "github":
        return GitHubComments(github_api_url, token)
    if provider == "gitlab":
        return GitLabNotes(gitlab_api_url, token)
    raise ForgeRejected(f"no pull request comments for provider {provider!r}")
