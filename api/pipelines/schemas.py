"""Response schemas of the pipelines API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.integrations.triggers import Triggers
from core.pipelines.document import VariableName, VariableValue


class PipelineStageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    position: int
    stage_type: str
    image: str | None
    commands: list[Any]
    conditions: dict[str, Any]
    timeout_seconds: int
    depends_on: list[str]
    retry_count: int
    allow_failure: bool
    artifact_paths: list[str]
    cache_paths: list[str]
    working_directory: str | None
    environment: dict[str, Any]


class PipelineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    generated_by_task_id: uuid.UUID | None
    name: str
    description: str | None
    pipeline_type: str
    status: str
    version: int
    triggers: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None
    # Proven by a verification run: true (with the green run), false, or null (never run).
    verified: bool | None = None
    verified_run_id: uuid.UUID | None = None


class PipelineDetail(PipelineOut):
    config: dict[str, Any]
    # The verification's verdict: runs, attempts, repairs; the failing stage, its class,
    # diagnosis and evidence lines when it did not run green.
    verification: dict[str, Any] | None = None
    stages: list[PipelineStageOut] = Field(default_factory=list)
    export_formats: list[str] = Field(default_factory=lambda: ["github-actions", "gitlab-ci"])


class PipelineUpdate(BaseModel):
    """PATCH body: the fields given are replaced (triggers and variables as a whole); a change
    of name, triggers or variables is a new version."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    triggers: Triggers | None = None
    variables: dict[VariableName, VariableValue] | None = Field(default=None, max_length=200)
    # Paused pipelines start no runs and their schedules are paused.
    status: Literal["active", "paused"] | None = None


class PipelineVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    change: str
    author_user_id: uuid.UUID | None
    author_api_key_id: uuid.UUID | None
    agent_task_id: uuid.UUID | None
    created_at: datetime
    # The whole document (in the read of one version).
    spec: dict[str, Any] | None = None
    # What running this version showed (a verification run).
    verification: dict[str, Any] | None = None


class VersionPage(BaseModel):
    items: list[PipelineVersionOut]
    # Pass as `before` for the next (older) page.
    next_before: int | None = None


class VersionDiffOut(BaseModel):
    from_version: int
    to_version: int
    diff: str
