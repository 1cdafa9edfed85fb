"""Response schemas for projects, repositories and environments (the inputs they answer are
validated by core.projects.models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.projects.models import ProjectConfigOut
from forgeline.statuses.projects import ProjectStatus


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


ProjectStatusFilter = ProjectStatus


class WebhookSetupOut(BaseModel):
    """Shown once, when the repository is connected: paste the URL of your forge and the secret
    into its webhook form (rotate with POST /v1/projects/{id}/repository/webhook-secret)."""

    urls: dict[str, str]
    secret: str
    content_type: str


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
    webhook: WebhookSetupOut | None = None


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
