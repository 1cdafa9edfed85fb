"""The pipeline definition format shared by the agent (proposals it validates) and stored
pipelines (what exports render): stages with commands, images, conditions and dependencies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

StageType = Literal["install", "lint", "test", "build", "security_scan", "deploy"]
STAGE_ORDER: tuple[str, ...] = ("install", "lint", "test", "build", "security_scan", "deploy")
# Stages whose failure is reported without failing the run (continue-on-error / allow_failure):
# a dependency audit fails on advisories published after the commit, and on registries that
# offer no audit endpoint, neither of which the commit broke.
ADVISORY_STAGE_TYPES: frozenset[str] = frozenset({"security_scan"})


class ProposedStage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    stage_type: StageType
    commands: list[str] = Field(min_length=1)
    image: str | None = None
    services: list[str] = Field(default_factory=list)
    working_directory: str = "."
    conditions: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: int = Field(default=600, ge=30, le=6 * 3600)
    depends_on: list[str] = Field(default_factory=list)
    cache_paths: list[str] = Field(default_factory=list)
    # Files whose content keys the dependency cache (lockfiles), relative to the repo root.
    cache_key_files: list[str] = Field(default_factory=list)
    artifact_paths: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # Runs once per value (PYTHON_VERSION -> ["3.11", "3.12"]); `${NAME}` in the image and
    # the variable NAME in the commands take each value.
    matrix: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,39}$")],
        Annotated[
            list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,40}$")]],
            Field(min_length=1, max_length=20),
        ],
    ] = Field(default_factory=dict, max_length=3)


class PipelineProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    pipeline_type: Literal["build_only", "test_only", "deploy_only", "full_cicd"] = "full_cicd"
    framework: str = "unknown"
    triggers: dict[str, Any] = Field(default_factory=dict)
    stages: list[ProposedStage] = Field(min_length=1)
    estimated_build_seconds: int = 0


class ValidationReport(BaseModel):
    valid: bool
    errors: list[str] = Field(default_factory=list)
    github_actions_yaml: str | None = None
    gitlab_ci_yaml: str | None = None


def step_name(command: str, limit: int) -> str:
    """A command's display name: its first line, cut to `limit` characters."""
    first = command.strip().splitlines()[0] if command.strip() else "run"
    return first if len(first) <= limit else first[: limit - 3] + "..."
