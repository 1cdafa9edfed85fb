"""Payloads of the forge-integration workflows: a verified forge event reduced to what triggers
need, the runs it started, and commit-status reports. Pure: importable in the workflow sandbox."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ForgeProvider = Literal["github", "gitlab"]
EventKind = Literal["push", "pull_request"]
RefType = Literal["branch", "tag"]
PullRequestAction = Literal["opened", "synchronize", "reopened", "closed"]
# What Forgeline reports; each forge maps it onto its own vocabulary.
CommitState = Literal["pending", "running", "success", "failure", "cancelled"]
FINAL_COMMIT_STATES: tuple[CommitState, ...] = ("success", "failure", "cancelled")

DELIVERY_NOT_FOUND_ERROR = "DeliveryNotFound"
# The forge refused the report for good (bad token, unknown repository, invalid request).
FORGE_REJECTED_ERROR = "ForgeRejected"
# A commit status workflow sends one report: its activity retries for about a day, then gives up.
COMMIT_STATUS_MAX_ATTEMPTS = 60


def webhook_delivery_workflow_id(provider: str, delivery_id: str) -> str:
    """One workflow per delivery: redeliveries of the same event land on the same ID."""
    return f"webhook-{provider}-{delivery_id}"


def commit_status_workflow_id(run_id: str, state: str) -> str:
    """One report per run and state, however often the change is announced."""
    return f"commit-status-{run_id}-{state}"


class PullRequestInfo(BaseModel):
    """What pull request tracking keeps of a pull/merge request event (cleaned, bounded)."""

    title: str = ""
    url: str = ""
    author: str | None = None
    draft: bool = False


class RefEvent(BaseModel):
    """A push or pull/merge request as the forge's payload tells it (validated, bounded)."""

    kind: EventKind
    # owner/name on GitHub, the project's path (group/sub/name) on GitLab: where statuses go.
    forge_repository: str
    ref_type: RefType = "branch"
    # Branch or tag name for a push; the head branch for a pull request.
    ref_name: str
    head_sha: str
    # Push: the previous tip (None when the push created the ref).
    before_sha: str | None = None
    # Pull request: number, action, target branch, and whether the head comes from a fork.
    pr_number: int | None = None
    pr_action: PullRequestAction | None = None
    base_branch: str | None = None
    base_sha: str | None = None
    merged: bool = False
    from_fork: bool = False
    pull_request: PullRequestInfo | None = None


class ForgeEvent(RefEvent):
    """A push or pull/merge request event of a connected repository, as triggers see it."""

    provider: ForgeProvider
    delivery_id: str
    repository_id: str
    project_id: str
    organization_id: str | None = None


class DeliveryInput(BaseModel):
    """Start of a webhook-processing workflow: the stored delivery row and its event."""

    delivery_row_id: str
    event: ForgeEvent


class TriggerCandidates(BaseModel):
    """Pipelines whose ref, event and type filters match; `paths_needed` when any of them also
    filters on changed paths."""

    pipeline_ids: list[str] = Field(default_factory=list)
    paths_needed: bool = False


class ChangedPathsInput(BaseModel):
    event: ForgeEvent


class ChangedPaths(BaseModel):
    """Paths changed by the pushed range or the pull request; None when git could not tell (too
    many, unknown history): path filters then match, as GitHub Actions does."""

    paths: list[str] | None = None


class StartRunsInput(BaseModel):
    event: ForgeEvent
    pipeline_ids: list[str]
    changed: ChangedPaths = Field(default_factory=ChangedPaths)
    delivery_workflow_id: str = ""


class StartedRuns(BaseModel):
    run_ids: list[str] = Field(default_factory=list)


class DeliveryOutcome(BaseModel):
    delivery_row_id: str
    status: Literal["processed", "ignored", "failed"]
    error: str | None = None
    run_ids: list[str] = Field(default_factory=list)


class CommitStatusInput(BaseModel):
    run_id: str
    state: CommitState


class CommitStatusResult(BaseModel):
    """Whether the forge received the report, or why it was not sent."""

    reported: bool
    reason: str | None = None


def pipeline_schedule_id(pipeline_id: str, index: int) -> str:
    """The Temporal Schedule of a pipeline's schedule entry (by its position in `schedule`)."""
    return f"pipeline-schedule-{pipeline_id}-{index}"


class ScheduledRunInput(BaseModel):
    """What a pipeline schedule's action starts: a run of the pipeline with trigger=schedule."""

    pipeline_id: str
    schedule_id: str
    # The firing's workflow ID (schedule action ID + fire time) and first run ID: one run each.
    firing_id: str = ""


class ScheduledRun(BaseModel):
    run_id: str | None = None
    # Why no run started (pipeline gone, paused, no longer scheduled).
    skipped: str | None = None


def pull_request_report_workflow_id(project_id: str, pr_number: int) -> str:
    """One report workflow per pull request: its comment is written by one writer at a time."""
    return f"pr-report-{project_id}-{pr_number}"


class PullRequestRef(BaseModel):
    """A tracked pull request and where its comment goes."""

    project_id: str
    pr_number: int
    provider: ForgeProvider
    forge_repository: str
    organization_id: str | None = None
    # Fork pull requests run nothing; their comment says so.
    from_fork: bool = False


class CommentResult(BaseModel):
    """Whether the forge holds the pull request's comment as rendered, or why not."""

    published: bool
    comment_id: str | None = None
    reason: str | None = None
