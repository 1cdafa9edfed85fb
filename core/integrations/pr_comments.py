"""The one comment Forgeline keeps on a pull request: rendered from its pr_tracking row (CI status
per pipeline with links to the runs, the preview's URL, coverage, quality score), created once
(found again by its marker when an attempt crashed before storing its ID) and edited afterwards.
Pipeline names and notes are user text: they are flattened to one line and escaped."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.integrations.commit_status import run_url
from db.models.deployments import Deployment
from db.models.integrations import PullRequest
from db.models.projects import Environment, Repository
from db.session import session_scope
from forgeline.crypto import decrypt_str
from forgeline.settings import Settings
from forgeline.statuses.deployments import DeploymentStatus, EnvironmentStatus
from infra.forge_comments import CommentGone, PullRequestComments
from workflows.integrations_models import CommentResult, PullRequestRef

MARKER = "<!-- forgeline:pull-request-report -->"
ICONS = {"success": "✅", "failure": "❌", "running": "⏳", "pending": "🕓"}
FORK_NOTE = (
    "Pipelines and previews do not run for pull requests from forks: they would receive the "
    "project's secrets. A maintainer can push the branch to the repository to run them."
)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def _inline(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())[:limit]
    return _MARKDOWN.sub(r"\\\1", flat)


@dataclass(frozen=True)
class Preview:
    url: str | None
    status: str
    commit_sha: str | None


async def _preview(session: AsyncSession, row: PullRequest) -> Preview | None:
    if row.preview_environment_id is None:
        return None
    env = await session.get(Environment, row.preview_environment_id)
    if env is None:
        return None
    live = await session.scalar(
        select(Deployment.commit_sha)
        .where(Deployment.environment_id == env.id, Deployment.status == DeploymentStatus.ACTIVE)
        .limit(1)
    )
    return Preview(url=env.url, status=env.status, commit_sha=live)


def render(
    settings: Settings, row: PullRequest, preview: Preview | None, *, from_fork: bool
) -> str | None:
    """The comment's Markdown, or None when there is nothing to say yet."""
    lines = [MARKER, "### Forgeline", ""]
    if from_fork and not row.pipeline_checks:
        return "\n".join([*lines, FORK_NOTE, ""])
    if not row.pipeline_checks and preview is None:
        return None
    if row.pipeline_checks:
        lines += ["| Pipeline | Status | Run |", "| --- | --- | --- |"]
        checks = sorted(row.pipeline_checks.values(), key=lambda c: str(c.get("name")))
        for check in checks:
            status = str(check.get("status") or "pending")
            name = _inline(str(check.get("name") or "pipeline"))
            url = run_url(settings, str(check.get("run_id")))
            lines.append(f"| {name} | {ICONS.get(status, '')} {status} | [run]({url}) |")
        lines.append("")
    lines.append(f"**Preview:** {_preview_text(row, preview)}")
    if row.test_coverage_percentage is not None:
        lines.append(f"**Coverage:** {row.test_coverage_percentage}% of lines")
    else:
        lines.append("**Coverage:** no coverage report")
    if row.coverage_note:
        lines.append(f"> coverage note: {_inline(row.coverage_note, 600)}")
    score = f"{row.quality_score} / 100" if row.quality_score is not None else "not scored yet"
    lines += [f"**Quality score:** {score}", ""]
    return "\n".join(lines)


def _preview_text(row: PullRequest, preview: Preview | None) -> str:
    if preview is None:
        return "no deploy stage ran for this pull request"
    if row.status in ("closed", "merged"):
        # Its teardown started with the closing (a durable workflow), done or under way.
        return f"removed (the pull request was {row.status})"
    if preview.status == EnvironmentStatus.DELETED:
        # Never the URL: it no longer serves.
        return "expired (removed when its time to live ran out; the next push deploys it again)"
    if preview.url and preview.commit_sha:
        return f"{preview.url} (commit `{preview.commit_sha[:12]}`)"
    return "being deployed"


async def _stored(
    session: AsyncSession, project_id: uuid.UUID, number: int
) -> tuple[PullRequest, str | None] | None:
    found = (
        await session.execute(
            select(PullRequest, Repository.access_token_encrypted)
            .outerjoin(Repository, Repository.project_id == PullRequest.project_id)
            .where(PullRequest.project_id == project_id, PullRequest.pr_number == number)
        )
    ).one_or_none()
    return None if found is None else (found[0], found[1])


async def _remember(
    session_maker: async_sessionmaker[AsyncSession],
    row_id: uuid.UUID,
    comment_id: str,
    digest: str | None,
) -> None:
    async with session_scope(session_maker) as session:
        row = await session.get(PullRequest, row_id, with_for_update=True)
        if row is not None:
            row.comment_id = comment_id
            row.comment_digest = digest


async def publish(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    ref: PullRequestRef,
    client_for: Callable[[str], PullRequestComments],
) -> CommentResult:
    """Create or edit the comment; `client_for(token)` builds the forge client. Forge errors
    (infra.forges) propagate: the caller retries them."""
    async with session_maker() as session:
        stored = await _stored(session, uuid.UUID(ref.project_id), ref.pr_number)
        if stored is None:
            return CommentResult(published=False, reason="the pull request is not tracked")
        row, token_encrypted = stored
        preview = await _preview(session, row)
    body = render(settings, row, preview, from_fork=ref.from_fork)
    if body is None:
        return CommentResult(published=False, reason="nothing to report yet")
    digest = hashlib.sha256(body.encode()).hexdigest()
    comment_id = row.comment_id
    if comment_id is not None and row.comment_digest == digest:
        return CommentResult(published=True, comment_id=comment_id, reason="unchanged")
    if token_encrypted is None:
        return CommentResult(
            published=False, reason="the repository has no access token for its forge"
        )
    forge = client_for(decrypt_str(token_encrypted, settings))
    repository, number = ref.forge_repository, ref.pr_number
    if comment_id is not None:
        try:
            await forge.update(repository, number, comment_id, body)
        except CommentGone:
            comment_id = None
        else:
            await _remember(session_maker, row.id, comment_id, digest)
            return CommentResult(published=True, comment_id=comment_id)
    # No stored ID: an earlier attempt may have posted it before it could store the ID.
    comment_id = await forge.find(repository, number, MARKER)
    if comment_id is None:
        comment_id = await forge.create(repository, number, body)
        await _remember(session_maker, row.id, comment_id, digest)
        return CommentResult(published=True, comment_id=comment_id)
    await _remember(session_maker, row.id, comment_id, None)
    await forge.update(repository, number, comment_id, body)
    await _remember(session_maker, row.id, comment_id, digest)
    return CommentResult(published=True, comment_id=comment_id)
