"""Payload models of what a stage needs around its commands: its cache, its service containers
and the matrix leg it is (carried in StageSpec, built by the run plan from the document)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class StageCache(_Model):
    """Declared cache paths (relative to the stage's directory) and how they are keyed."""

    paths: list[str]
    # Entries belong to one pipeline (its ID).
    scope: str
    prefix: str = "deps"
    key_files: list[str] = Field(default_factory=list)
    restore_keys: list[str] = Field(default_factory=list)


class ServiceSpec(_Model):
    """A container beside the stage, reachable by `name` on the stage's own network."""

    name: str
    image: str
    environment: dict[str, str] = Field(default_factory=dict)
    health_command: str | None = None
    health_timeout_seconds: int = 60


class MatrixLeg(_Model):
    """One combination of a matrix stage: the variables it sets, and its siblings' policy."""

    # The matrix stage this leg belongs to (the stage's own name in `depends_on`).
    stage: str
    values: dict[str, str]
    fail_fast: bool = True
