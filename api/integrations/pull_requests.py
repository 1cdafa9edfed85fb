"""/v1 routes of a project's tracked pull requests: state, CI status overall and per pipeline,
line coverage, quality score (formula in docs/pull-requests.md) and preview environment. Reached
through the caller's organization only: another tenant's project or pull request is a 404."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel

from api.deps import PROJECTS_READ, Principal, SessionDep, require_scope
from core.integrations import pr_queries
from db.models.integrations import PullRequest

router = APIRouter(tags=["pull requests"])

Reader = Annotated[Principal, Depends(require_scope(PROJECTS_READ))]


class PullRequestOut(BaseModel):
    """A tracked pull/merge request: state, CI status (overall and per pipeline), line coverage,
    quality score (formula in docs/pull-requests.md) and its preview environment."""

    id: uuid.UUID
    project_id: uuid.UUID
    number: int
    title: str
    url: str
    repository: str
    branch: str
    base_branch: str
    head_sha: str | None
    author: str | None
    status: str
    ci_status: str
    pipelines: dict[str, Any]
    test_coverage_percentage: Decimal | None
    coverage_note: str | None
    quality_score: Decimal | None
    preview_environment_id: uuid.UUID | None
    latest_pipeline_run_id: uuid.UUID | None
    comment_id: str | None
    created_at: datetime
    updated_at: datetime
    merged_at: datetime | None
    closed_at: datetime | None

    @classmethod
    def of(cls, row: PullRequest) -> PullRequestOut:
        return cls(
            id=row.id,
            project_id=row.project_id,
            number=row.pr_number,
            title=row.title,
            url=row.pr_url,
            repository=row.repository_name,
            branch=row.branch_name,
            base_branch=row.base_branch,
            head_sha=row.head_sha,
            author=row.author,
            status=row.status,
            ci_status=row.ci_status,
            pipelines=row.pipeline_checks or {},
            test_coverage_percentage=row.test_coverage_percentage,
            coverage_note=row.coverage_note,
            quality_score=row.quality_score,
            preview_environment_id=row.preview_environment_id,
            latest_pipeline_run_id=row.latest_pipeline_run_id,
            comment_id=row.comment_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            merged_at=row.merged_at,
            closed_at=row.closed_at,
        )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not found (or owned by another organization)"}
}


@router.get("/projects/{project_id}/pull-requests", responses=_NOT_FOUND)
async def list_pull_requests(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    status_filter: Annotated[
        Literal["open", "draft", "merged", "closed"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=pr_queries.MAX_PAGE)] = 50,
) -> list[PullRequestOut]:
    """The project's pull requests, most recently updated first."""
    rows = await pr_queries.list_pull_requests(
        session, principal, project_id, status=status_filter, limit=limit
    )
    return [PullRequestOut.of(row) for row in rows]


@router.get("/projects/{project_id}/pull-requests/{number}", responses=_NOT_FOUND)
async def get_pull_request(
    project_id: uuid.UUID,
    number: Annotated[int, Path(ge=1, le=2**31 - 1)],
    session: SessionDep,
    principal: Reader,
) -> PullRequestOut:
    """One pull request by its number on the forge."""
    return PullRequestOut.of(
        await pr_queries.get_pull_request(session, principal, project_id, number)
    )
