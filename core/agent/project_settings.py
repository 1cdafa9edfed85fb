"""The project's own build settings (its `config`: root directory, install/build/test commands,
Node and Python versions) win over what the analysis of the repository detects: a generated
pipeline builds the app the way its project says."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.agent.images import node_image, python_image
from core.agent.workspace_projects import JS_LANGUAGES
from db.models.agent import AgentTask
from db.models.projects import Project
from workflows.agent_models import RepoAnalysis

FROM_PROJECT = "project settings"
COMMANDS = (("install", "install_command"), ("build", "build_command"), ("test", "test_command"))


class BuildSettings(BaseModel):
    root_directory: str | None = None
    install_command: str | None = None
    build_command: str | None = None
    test_command: str | None = None
    node_version: str | None = None
    python_version: str | None = None

    @classmethod
    def of(cls, config: dict[str, Any] | None) -> BuildSettings:
        """From a stored project config (validated when it was stored; unknown keys ignored)."""
        raw = config or {}
        return cls(
            **{k: str(raw[k]) for k in cls.model_fields if isinstance(raw.get(k), str) and raw[k]}
        )


async def build_settings_of(session: AsyncSession, task_id: uuid.UUID) -> BuildSettings:
    """The build settings of the task's project, as they stand now."""
    config = await session.scalar(
        select(Project.config)
        .join(AgentTask, AgentTask.project_id == Project.id)
        .where(AgentTask.id == task_id)
    )
    return BuildSettings.of(config)


def apply_build_settings(analysis: RepoAnalysis, settings: BuildSettings) -> RepoAnalysis:
    """The analysis with the primary app built as the project says (the first app is the one
    at the root directory when the analysis found one there: `app_path` ranks it first)."""
    if not analysis.apps:
        return analysis
    app = analysis.primary
    notes = list(analysis.notes)
    root = (settings.root_directory or "").strip("/")
    if root and app.path != root:
        notes.append(f"the project's root directory {root!r} is where the app is built")
        app.path = root
    for kind, field in COMMANDS:
        command = getattr(settings, field)
        if command:
            setattr(app, field, command)
            app.command_sources[kind] = FROM_PROJECT
    if settings.node_version and app.language in JS_LANGUAGES:
        app.image = node_image(settings.node_version)
    if settings.python_version and app.language == "python":
        app.image = python_image(settings.python_version)
    analysis.notes = notes
    return analysis
