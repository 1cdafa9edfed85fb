"""GitHub and GitLab webhook payloads reduced to the event triggers need. Payloads are hostile
input: every field used is validated (SHAs, ref names, numbers); the rest is ignored."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.integrations.errors import MalformedDelivery, UnsupportedEvent
from core.runs.schemas import validate_branch
from workflows.integrations_models import PullRequestAction, PullRequestInfo, RefEvent, RefType

SHA = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
_ZERO = re.compile(r"^0+$")
MAX_REF_LENGTH = 255
M = TypeVar("M", bound=BaseModel)


class ParsedEvent(RefEvent):
    model_config = ConfigDict(frozen=True)

    # URLs of the repository as the forge names it (matched against connected repositories).
    repository_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ping:
    """GitHub's hook check: answered 200, nothing else."""


@dataclass(frozen=True)
class Ignored:
    """A supported event that starts nothing (a deleted ref, a label change): recorded only."""

    reason: str
    repository_urls: tuple[str, ...] = field(default_factory=tuple)


Parsed = ParsedEvent | Ping | Ignored


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _GitHubRepo(_Loose):
    full_name: str = Field(max_length=300)
    clone_url: str | None = Field(default=None, max_length=1000)
    html_url: str | None = Field(default=None, max_length=1000)
    ssh_url: str | None = Field(default=None, max_length=1000)


class _GitHubPush(_Loose):
    ref: str = Field(max_length=1000)
    before: str = Field(pattern=SHA)
    after: str = Field(pattern=SHA)
    deleted: bool = False
    repository: _GitHubRepo


class _GitHubRef(_Loose):
    ref: str = Field(max_length=1000)
    sha: str = Field(pattern=SHA)
    repo: _GitHubRepo | None = None


class _GitHubUser(_Loose):
    login: str | None = None


class _GitHubPull(_Loose):
    head: _GitHubRef
    base: _GitHubRef
    merged: bool | None = False
    title: str | None = None
    html_url: str | None = None
    user: _GitHubUser | None = None
    draft: bool | None = False


class _GitHubPullEvent(_Loose):
    action: str = Field(max_length=100)
    number: int = Field(ge=1, le=2**31 - 1)
    pull_request: _GitHubPull
    repository: _GitHubRepo


class _GitLabProject(_Loose):
    id: int | None = None
    path_with_namespace: str = Field(max_length=1000)
    git_http_url: str | None = Field(default=None, max_length=1000)
    git_ssh_url: str | None = Field(default=None, max_length=1000)
    web_url: str | None = Field(default=None, max_length=1000)


class _GitLabPush(_Loose):
    object_kind: Literal["push", "tag_push"]
    ref: str = Field(max_length=1000)
    before: str = Field(pattern=SHA)
    after: str = Field(pattern=SHA)
    project: _GitLabProject


class _GitLabCommit(_Loose):
    id: str = Field(pattern=SHA)


class _GitLabMergeAttributes(_Loose):
    iid: int = Field(ge=1, le=2**31 - 1)
    action: str | None = Field(default=None, max_length=100)
    source_branch: str = Field(max_length=1000)
    target_branch: str = Field(max_length=1000)
    source_project_id: int | None = None
    target_project_id: int | None = None
    last_commit: _GitLabCommit
    oldrev: str | None = None
    title: str | None = None
    url: str | None = None
    draft: bool | None = False
    work_in_progress: bool | None = False


class _GitLabUser(_Loose):
    username: str | None = None


class _GitLabMerge(_Loose):
    object_kind: Literal["merge_request"]
    project: _GitLabProject
    object_attributes: _GitLabMergeAttributes
    user: _GitLabUser | None = None


def _text(value: str | None, limit: int) -> str:
    """Forge text as stored: no NUL (Postgres refuses it), bounded."""
    return (value or "").replace("\x00", "")[:limit]


def _pull_request_info(
    title: str | None, url: str | None, author: str | None, draft: bool
) -> PullRequestInfo:
    link = _text(url, 500)
    return PullRequestInfo(
        title=_text(title, 500),
        # Shown as a link: only a web address, never javascript: or the like.
        url=link if link.startswith(("https://", "http://")) else "",
        author=_text(author, 255) or None,
        draft=draft,
    )


GITHUB_PR_ACTIONS: dict[str, PullRequestAction] = {
    "opened": "opened",
    "synchronize": "synchronize",
    "reopened": "reopened",
    "closed": "closed",
}
GITLAB_MR_ACTIONS: dict[str, PullRequestAction] = {
    "open": "opened",
    "update": "synchronize",
    "reopen": "reopened",
    "close": "closed",
    "merge": "closed",
}


def _validate(model: type[M], payload: dict[str, Any]) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedDelivery(f"{where}: {first['msg']}", field=where) from exc


def _ref_name(value: str, what: str) -> str:
    if not value or len(value.encode()) > MAX_REF_LENGTH:
        raise MalformedDelivery(f"{what} name must have 1 to {MAX_REF_LENGTH} bytes")
    try:
        return validate_branch(value)
    except ValueError as exc:
        raise MalformedDelivery(f"{what} name is not a valid git ref: {value!r}") from exc


def _split_ref(ref: str) -> tuple[RefType, str]:
    if ref.startswith("refs/heads/"):
        return "branch", _ref_name(ref.removeprefix("refs/heads/"), "branch")
    if ref.startswith("refs/tags/"):
        return "tag", _ref_name(ref.removeprefix("refs/tags/"), "tag")
    raise MalformedDelivery(f"ref {ref[:100]!r} is neither a branch nor a tag")


def _urls(*candidates: str | None) -> tuple[str, ...]:
    return tuple(c for c in candidates if c)


def _push(
    forge_repository: str, ref: str, before: str, after: str, urls: tuple[str, ...]
) -> Parsed:
    """A push to a branch or tag (either forge); one that deleted the ref starts nothing."""
    if _ZERO.match(after):
        return Ignored("the push deleted the ref", urls)
    ref_type, name = _split_ref(ref)
    return ParsedEvent(
        kind="push",
        forge_repository=forge_repository,
        ref_type=ref_type,
        ref_name=name,
        head_sha=after,
        before_sha=None if _ZERO.match(before) else before,
        repository_urls=urls,
    )


def parse_github(event: str, payload: dict[str, Any]) -> Parsed:
    if event == "ping":
        return Ping()
    if event == "push":
        push = _validate(_GitHubPush, payload)
        repo = push.repository
        urls = _urls(repo.clone_url, repo.html_url, repo.ssh_url)
        if push.deleted:
            return Ignored("the push deleted the ref", urls)
        return _push(repo.full_name, push.ref, push.before, push.after, urls)
    if event == "pull_request":
        pull_event = _validate(_GitHubPullEvent, payload)
        repo = pull_event.repository
        urls = _urls(repo.clone_url, repo.html_url, repo.ssh_url)
        action = GITHUB_PR_ACTIONS.get(pull_event.action)
        if action is None:
            return Ignored(f"pull_request action {pull_event.action!r} starts nothing", urls)
        pull = pull_event.pull_request
        head_repo = pull.head.repo.full_name if pull.head.repo else None
        return ParsedEvent(
            kind="pull_request",
            forge_repository=repo.full_name,
            ref_type="branch",
            ref_name=_ref_name(pull.head.ref, "branch"),
            head_sha=pull.head.sha,
            pr_number=pull_event.number,
            pr_action=action,
            base_branch=_ref_name(pull.base.ref, "branch"),
            base_sha=pull.base.sha,
            merged=bool(pull.merged),
            from_fork=head_repo != repo.full_name,
            pull_request=_pull_request_info(
                pull.title, pull.html_url, pull.user.login if pull.user else None, bool(pull.draft)
            ),
            repository_urls=urls,
        )
    raise UnsupportedEvent(f"GitHub event {event[:100]!r} is not supported", event=event[:100])


def parse_gitlab(event: str, payload: dict[str, Any]) -> Parsed:
    if event in ("Push Hook", "Tag Push Hook"):
        push = _validate(_GitLabPush, payload)
        project = push.project
        urls = _urls(project.git_http_url, project.web_url, project.git_ssh_url)
        return _push(project.path_with_namespace, push.ref, push.before, push.after, urls)
    if event == "Merge Request Hook":
        merge = _validate(_GitLabMerge, payload)
        project = merge.project
        attrs = merge.object_attributes
        urls = _urls(project.git_http_url, project.web_url, project.git_ssh_url)
        action = GITLAB_MR_ACTIONS.get(attrs.action or "")
        if action is None or (attrs.action == "update" and not attrs.oldrev):
            # An update without new commits (title, labels, assignees) runs nothing.
            return Ignored(f"merge request action {attrs.action!r} starts nothing", urls)
        return ParsedEvent(
            kind="pull_request",
            forge_repository=project.path_with_namespace,
            ref_type="branch",
            ref_name=_ref_name(attrs.source_branch, "branch"),
            head_sha=attrs.last_commit.id,
            pr_number=attrs.iid,
            pr_action=action,
            base_branch=_ref_name(attrs.target_branch, "branch"),
            merged=attrs.action == "merge",
            from_fork=(
                attrs.source_project_id is not None
                and attrs.source_project_id != attrs.target_project_id
            ),
            pull_request=_pull_request_info(
                attrs.title,
                attrs.url,
                merge.user.username if merge.user else None,
                bool(attrs.draft or attrs.work_in_progress),
            ),
            repository_urls=urls,
        )
    raise UnsupportedEvent(f"GitLab event {event[:100]!r} is not supported", event=event[:100])
