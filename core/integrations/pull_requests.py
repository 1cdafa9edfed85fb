"""Pull request tracking: `pr_tracking` rows written from pull/merge request events (state,
head/base, head SHA, title, link, author) and their CI status from the runs the pull request
started.

CI status per pipeline is the status of the pipeline's latest run for the pull request (a
superseded run no longer counts); the row's `ci_status` sums them up: failure when any pipeline
failed or was cancelled, else running, else pending, else success.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.integrations import PullRequest
from db.models.pipelines import PipelineRun
from workflows.integrations_models import ForgeEvent

# Run status -> pr_tracking check status (GitHub shows a cancelled run as an error).
CHECK_STATUS = {
    "queued": "pending",
    "running": "running",
    "success": "success",
    "failed": "failure",
    "cancelled": "failure",
}


def _state(event: ForgeEvent) -> str | None:
    """The pull request's state after the event; None when the event does not change it."""
    if event.pr_action == "closed":
        return "merged" if event.merged else "closed"
    if event.pr_action in ("opened", "reopened"):
        draft = event.pull_request is not None and event.pull_request.draft
        return "draft" if draft else "open"
    return None


async def record_pull_request(session: AsyncSession, event: ForgeEvent) -> uuid.UUID | None:
    """Create or update the pull request's row (one per project and number). Redeliveries and
    concurrent events of one pull request land on the same row."""
    if event.kind != "pull_request" or event.pr_number is None:
        return None
    info = event.pull_request
    state = _state(event)
    values: dict[str, Any] = {
        "branch_name": event.ref_name[:255],
        "base_branch": (event.base_branch or "main")[:255],
        "head_sha": event.head_sha,
        "repository_id": uuid.UUID(event.repository_id),
        "repository_name": event.forge_repository[:255],
    }
    if info is not None:
        if info.title:
            values["title"] = info.title
        if info.url:
            values["pr_url"] = info.url
        if info.author:
            values["author"] = info.author
    changes = dict(values)
    if state is not None:
        changes["status"] = state
        changes["closed_at"] = func.now() if state in ("closed", "merged") else None
        changes["merged_at"] = func.now() if state == "merged" else None
    changes["updated_at"] = func.now()
    stmt = insert(PullRequest).values(
        id=uuid.uuid4(),
        project_id=uuid.UUID(event.project_id),
        pr_number=event.pr_number,
        title=values.get("title", f"#{event.pr_number}"),
        pr_url=values.get("pr_url", ""),
        status=state or "open",
        **{k: v for k, v in values.items() if k not in ("title", "pr_url")},
        closed_at=changes.get("closed_at"),
        merged_at=changes.get("merged_at"),
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=["project_id", "pr_number"], set_=changes
    ).returning(PullRequest.id)
    row_id: uuid.UUID | None = await session.scalar(upsert)
    return row_id


async def pipeline_statuses(
    session: AsyncSession, project_id: uuid.UUID, repository: str, pr_number: int
) -> dict[str, tuple[str, str]]:
    """pipeline id -> (latest run id, check status) of the pull request's runs."""
    forge = PipelineRun.metadata_["forge"]
    rows = await session.execute(
        select(PipelineRun.pipeline_id, PipelineRun.id, PipelineRun.status)
        .where(
            PipelineRun.project_id == project_id,
            forge["pr_number"].astext == str(pr_number),
            forge["repository"].astext == repository,
        )
        .order_by(PipelineRun.pipeline_id, PipelineRun.run_number.desc())
        .ext(distinct_on(PipelineRun.pipeline_id))
    )
    return {str(p): (str(r), CHECK_STATUS.get(s, "pending")) for p, r, s in rows}


def summary(statuses: list[str]) -> str:
    for wanted in ("failure", "running", "pending"):
        if wanted in statuses:
            return wanted
    return "success" if statuses else "pending"


async def record_run_status(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    """Recompute the CI status of the pull request the run belongs to; returns it, or None
    when the run is not a pull request's (or the pull request is not tracked)."""
    run = await session.get(PipelineRun, run_id)
    forge = (run.metadata_ or {}).get("forge") if run is not None else None
    if run is None or not isinstance(forge, dict) or forge.get("event") != "pull_request":
        return None
    pr_number, repository = forge.get("pr_number"), forge.get("repository")
    if not isinstance(pr_number, int) or not isinstance(repository, str):
        return None
    tracked = await session.scalar(
        select(PullRequest)
        .where(PullRequest.project_id == run.project_id, PullRequest.pr_number == pr_number)
        .with_for_update()
    )
    if tracked is None:
        return None
    latest = await pipeline_statuses(session, run.project_id, repository, pr_number)
    tracked.ci_status = summary([status for _, status in latest.values()])
    newest = await session.scalar(
        select(PipelineRun.id)
        .where(PipelineRun.id.in_([uuid.UUID(r) for r, _ in latest.values()]))
        .order_by(PipelineRun.created_at.desc(), PipelineRun.id.desc())
        .limit(1)
    )
    tracked.latest_pipeline_run_id = newest
    return tracked.ci_status
