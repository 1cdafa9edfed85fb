"""Request and response bodies of the deployments API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


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

    @model_validator(mode="after")
    def _one_source(self) -> DeploymentCreate:
        if self.pipeline_run_id is None and not (self.version or self.commit_sha):
            raise ValueError("give a pipeline_run_id, or a version / commit_sha")
        return self


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


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
    status: str
    provider: str
    url: str | None
    health_summary: dict[str, Any]
    error: str | None
    rollback_of_id: uuid.UUID | None
    rolled_back_to_id: uuid.UUID | None
    promoted_from_id: uuid.UUID | None
    approved_by_user_id: uuid.UUID | None
    rejected_by_user_id: uuid.UUID | None
    workflow_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rolled_back_at: datetime | None


class DeploymentDetail(DeploymentOut):
    health_checks: list[HealthCheckOut]
    containers: list[ContainerOut]
    runtime_logs: list[RuntimeLogOut]


class DecisionOut(BaseModel):
    deployment_id: uuid.UUID
    approved: bool
    status: str
