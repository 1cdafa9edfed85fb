"""Response schemas for projects, repositories and environments (the inputs they answer are
validated by core.projects.models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from core.projects.models import ProjectConfigOut
from db.models.projects import PROJECT_STATUSES


class ProjectOut(BaseModel):
    id: uuid.UUID
    organization_id: uuid.UUID | None
    name: str
    slug: str
    description: str | None
    project_type: str
    framework: str | None
    status: str
    config: ProjectConfigOut
    created_by_user_id: uuid.UUID | None
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime


ProjectStatusFilter = Literal["active", "paused", "archived", "failed_setup"]
assert set(ProjectStatusFilter.__args__) == set(PROJECT_STATUSES)  # type: ignore[attr-defined]


class RepositoryOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    provider: str
    url: str
    default_branch: str
    has_access_token: bool
    last_commit_sha: str | None
    last_synced_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EnvironmentOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    env_type: str
    provider: str
    config: dict[str, Any]
    url: str | None
    is_protected: bool
    required_approvals: int
    auto_deploy: bool
    status: str
    created_at: datetime
    updated_at: datetime
