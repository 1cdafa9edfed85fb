"""What creating a run takes, validated: branch, commit, variables, changed paths, environment.
Shared by every way a run is created (the API, reruns, forge events, schedules)."""

from __future__ import annotations

import re
import uuid
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
