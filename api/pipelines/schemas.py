"""Response schemas of the pipelines API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.integrations.triggers import Triggers


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


class PipelineDetail(PipelineOut):
    config: dict[str, Any]
    stages: list[PipelineStageOut] = Field(default_factory=list)
    export_formats: list[str] = Field(default_factory=lambda: ["github-actions", "gitlab-ci"])


class PipelineUpdate(BaseModel):
    """PATCH body: the fields given are replaced (triggers as a whole)."""

    model_config = ConfigDict(extra="forbid")

    triggers: Triggers | None = None
    # Paused pipelines start no runs and their schedules are paused.
    status: Literal["active", "paused"] | None = None
