"""Response schemas of pipeline runs, stage executions, logs and artifacts; the request schema
of a run is the core's (core/runs/schemas.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from core.runs.schemas import RunCreate as RunCreate
from core.runs.schemas import RunVariable as RunVariable
from forgeline.statuses.runs import FailureClass, RunStatus, StageStatus


class ArtifactOut(BaseModel):
    id: uuid.UUID
    name: str
    size_bytes: int
    sha256: str | None
    content_type: str | None
    stage_execution_id: uuid.UUID | None
    created_at: datetime
    # The run whose stage produced the artifact: an earlier run's for a reused stage.
    produced_by_run_id: uuid.UUID | None = None


class StageExecutionOut(BaseModel):
    id: uuid.UUID
    stage_name: str
    attempt: int
    status: StageStatus
    exit_code: int | None
    runner: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    log_line_count: int
    log_size_bytes: int
    log_stored_externally: bool
    # A reused stage: the run whose attempt it reuses (its log and artifacts are that attempt's).
    reused_from_run_id: uuid.UUID | None = None
    reused_from_id: uuid.UUID | None
    skip_reason: str | None
    error: str | None
    # What the attempt did not keep: its log past the limit, artifacts past the limits.
    warnings: list[str] = []
    # A failed or timed-out attempt: whose fault it was (infrastructure, flaky, code, config),
    # the cause in words and the log lines that show it.
    failure_class: FailureClass | None = None
    failure_cause: str | None = None
    failure_evidence: list[str] = []


class RunOut(BaseModel):
    id: uuid.UUID
    pipeline_id: uuid.UUID
    project_id: uuid.UUID
    run_number: int
    status: RunStatus
    trigger: str
    branch: str | None
    commit_sha: str | None
    variable_names: list[str]
    rerun_of_id: uuid.UUID | None
    reuse_from_run_id: uuid.UUID | None
    workflow_id: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: int | None
    error: str | None
    created_at: datetime
    # The pipeline version the run was created under, and what it executed: that version
    # (`stored`) or the `.forgeline.yml` of its commit (`repository`).
    pipeline_version: int | None = None
    pipeline_source: str = "stored"


class MatrixStageOut(BaseModel):
    """A matrix stage: the aggregate of its legs' statuses (their last attempts)."""

    stage: str
    status: StageStatus
    legs: dict[str, StageStatus]


class RunDetailOut(RunOut):
    stages: list[StageExecutionOut]
    matrices: list[MatrixStageOut] = []
    live: dict[str, object] | None = None
    # Queued for a build slot: 1 starts next when one of the organization's slots frees.
    queue_position: int | None = None
