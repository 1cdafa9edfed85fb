"""The one comment Forgeline keeps on a pull request: GitHub issue comments (githubkit) and GitLab
merge request notes (its REST API over httpx) behind one interface. The comment carries a hidden
marker, so a comment created by an attempt that crashed before its ID was stored is found again
instead of posted twice. Errors are those of infra.forges: wait, retry, or give up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from infra.forges import (
    ForgeRejected,
    _classify,
    github_call,
    github_client,
    github_repository,
    gitlab_request,
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


async def _marked(page_of: Callable[[int], Awaitable[Any]], marker: str) -> str | None:
    """The ID of the first comment whose body holds the marker, read 100 a page."""
    for page in range(1, MAX_PAGES + 1):
        found = await page_of(page)
        if not isinstance(found, list):
            return None
        for comment in found:
            if isinstance(comment, dict) and marker in str(comment.get("body") or ""):
                return str(comment.get("id"))
        if len(found) < 100:
            return None
    return None


class GitHubComments:
    """`/repos/{owner}/{repo}/issues/{number}/comments` and `/issues/comments/{id}`."""

    def __init__(self, api_url: str, token: str) -> None:
        self.github = github_client(api_url, token)

    async def _call(self, what: str, request: Any) -> Any:
        try:
            response = await github_call(f"GitHub {what}", request)
        except ForgeRejected as exc:
            if exc.status_code == 404 and what == "comment update":
                raise CommentGone(what) from exc
            raise
        return response.json()

    async def find(self, repository: str, number: int, marker: str) -> str | None:
        owner, name = github_repository(repository)
        issues = self.github.rest.issues
        return await _marked(
            lambda page: self._call(
                "comment list",
                issues.async_list_comments(owner, name, number, per_page=100, page=page),
            ),
            marker,
        )

    async def create(self, repository: str, number: int, body: str) -> str:
        owner, name = github_repository(repository)
        created = await self._call(
            "comment",
            self.github.rest.issues.async_create_comment(
                owner, name, number, body=body[:MAX_BODY_CHARS]
            ),
        )
        return str(created["id"])

    async def update(self, repository: str, number: int, comment_id: str, body: str) -> None:
        owner, name = github_repository(repository)
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
        response = await gitlab_request(f"GitLab {what}", method, url, self.token, **kwargs)
        if response.is_success:
            return response
        if response.status_code == 404 and what == "note update":
            raise CommentGone(what)
        raise _classify(response.status_code, response.headers, f"GitLab {what}")

    async def find(self, repository: str, number: int, marker: str) -> str | None:
        async def page_of(page: int) -> Any:
            response = await self._send(
                "note list",
                "GET",
                self._url(repository, number),
                params={"per_page": 100, "page": page, "sort": "asc"},
            )
            return response.json()

        return await _marked(page_of, marker)

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
