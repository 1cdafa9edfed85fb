"""Request and response schemas of pipeline runs, stage executions, logs and artifacts."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# git check-ref-format, roughly: shell metacharacters are allowed (they stay data: the branch
# reaches stages only as FORGELINE_BRANCH), but not what git itself refuses.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


def validate_branch(value: str) -> str:
    if (
        _REF_FORBIDDEN.search(value)
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or value == "@"
    ):
        raise ValueError("not a valid git branch name")
    return value


class RunVariable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=VARIABLE_NAME)
    value: str = Field(max_length=32_768)
    secret: bool = False

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.upper().startswith("FORGELINE_") or value.upper() in ("CI", "HOME", "PATH"):
            raise ValueError(f"{value} is reserved")
        return value


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger: Literal["manual", "api"] = "api"
    branch: str | None = Field(default=None, min_length=1, max_length=255)
    commit_sha: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,64}$")
    variables: list[RunVariable] = Field(default_factory=list, max_length=100)
    changed_paths: list[str] | None = Field(default=None, max_length=10_000)
    # Target environment: its config environment variables reach every stage (run > env > project).
    environment_id: uuid.UUID | None = None

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else validate_branch(value)

    @field_validator("variables")
    @classmethod
    def _unique(cls, value: list[RunVariable]) -> list[RunVariable]:
        names = [v.name for v in value]
        if len(names) != len(set(names)):
            raise ValueError("variable names must be unique")
        return value


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
    status: str
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


class RunOut(BaseModel):
    id: uuid.UUID
    pipeline_id: uuid.UUID
    project_id: uuid.UUID
    run_number: int
    status: str
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


class RunDetailOut(RunOut):
    stages: list[StageExecutionOut]
    live: dict[str, object] | None = None
    # Queued for a build slot: 1 starts next when one of the organization's slots frees.
    queue_position: int | None = None
