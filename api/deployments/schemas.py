"""Request and response bodies of the deployments API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgeline.statuses.deployments import DeploymentStatus
from workflows.deployment_models import unprintable


def _single_line(value: str | None) -> str | None:
    """Free text stored in Postgres and shown in logs: no NUL, no control characters."""
    if value is not None and (unprintable(value) or any(ch in value for ch in "\t\n\r")):
        raise ValueError("must not contain control characters")
    return value


class DeploymentCreate(BaseModel):
    """Deploy a successful pipeline run, or a version / commit (with a local source in dev)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_run_id: uuid.UUID | None = None
    version: str | None = Field(default=None, min_length=1, max_length=100)
    commit_sha: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,64}$")
    # With commit_sha alone: deploy the newest successful run of that commit (on this branch).
    branch: str | None = Field(default=None, min_length=1, max_length=255)
    # A local checkout (only when local repositories are allowed: development and tests).
    source_dir: str | None = Field(default=None, max_length=1000)
    output_dir: str | None = Field(default=None, max_length=255)
    dockerfile: str | None = Field(default=None, max_length=255)

    _printable = field_validator(
        "version", "branch", "source_dir", "output_dir", "dockerfile", mode="after"
    )(_single_line)

    @model_validator(mode="after")
    def _one_source(self) -> DeploymentCreate:
        if self.pipeline_run_id is None and not (self.version or self.commit_sha):
            raise ValueError("give a pipeline_run_id, or a version / commit_sha")
        return self


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason", mode="after")
    @classmethod
    def _printable(cls, value: str) -> str:
        # Line breaks and tabs are fine in a reason; NUL and other control characters are not.
        if unprintable(value):
            raise ValueError("the reason must not contain NUL or other control characters")
        if not value.strip():
            raise ValueError("the reason must not be blank")
        return value


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_environment_id: uuid.UUID


class ContainerOut(BaseModel):
    name: str
    container_id: str | None
    image: str
    host: str
    host_port: int | None
    status: str
    started_at: datetime | None
    stopped_at: datetime | None


class HealthCheckOut(BaseModel):
    check_number: int
    phase: str
    url: str
    status_code: int | None
    latency_ms: int | None
    ok: bool
    error: str | None
    checked_at: datetime


class RuntimeLogOut(BaseModel):
    seq: int
    stream: str
    source: str
    line: str
    logged_at: datetime


class DeploymentOut(BaseModel):
    id: uuid.UUID
    environment_id: uuid.UUID
    project_id: uuid.UUID
    pipeline_run_id: uuid.UUID | None
    version: str
    commit_sha: str | None
    image_ref: str | None
    status: DeploymentStatus
    provider: str
    url: str | None
    health_summary: dict[str, Any]
    error: str | None
    rollback_of_id: uuid.UUID | None
    rolled_back_to_id: uuid.UUID | None
    promoted_from_id: uuid.UUID | None
    approved_by_user_id: uuid.UUID | None
    rejected_by_user_id: uuid.UUID | None
    # The approval rules the deployment was requested under (kept when the environment changes).
    approval_protected: bool = False
    required_approvals: int = 0
    approver_roles: list[str] = []
    workflow_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rolled_back_at: datetime | None


class ApprovalOut(BaseModel):
    user_id: uuid.UUID | None
    role: str
    approved: bool
    reason: str
    decided_at: datetime


class ApprovalsOut(BaseModel):
    """Who approved a protected deployment and who is still needed."""

    required: int
    approved: int
    # How many more distinct approvers the deployment needs (0 once approved or decided).
    missing: int
    approver_roles: list[str]
    decisions: list[ApprovalOut]
    # Members who may still approve: the approving role, not the triggerer, not yet decided.
    eligible_user_ids: list[uuid.UUID]


class DeploymentDetail(DeploymentOut):
    approvals: ApprovalsOut | None = None
    health_checks: list[HealthCheckOut]
    containers: list[ContainerOut]
    runtime_logs: list[RuntimeLogOut]


class DecisionOut(BaseModel):
    deployment_id: uuid.UUID
    approved: bool
    status: DeploymentStatus
    approved_by: list[uuid.UUID] = []
    required_approvals: int = 1
