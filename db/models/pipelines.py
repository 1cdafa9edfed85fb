"""Pipelines and their executions: stages, runs, stage executions, log chunks, artifacts, and the
per-organization build slots runs queue for."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import TZ_DATETIME, check_in, created_at_column, json_array, json_object
from forgeline.statuses.runs import FailureClass, RunStatus, StageStatus

PIPELINE_TYPES = ("build_only", "test_only", "deploy_only", "full_cicd")
PIPELINE_STATUSES = ("draft", "active", "paused", "deprecated")
STAGE_TYPES = ("install", "lint", "test", "build", "security_scan", "deploy", "custom")
RUN_STATUSES = tuple(RunStatus)
RUN_TRIGGERS = ("manual", "api", "push", "pull_request", "schedule", "verification")
STAGE_EXECUTION_STATUSES = tuple(StageStatus)
RUNNERS = ("sandbox", "docker", "unsafe-local")


def _string_array(length: int = 255) -> Mapped[list[str]]:
    return mapped_column(
        ARRAY(String(length)), default=list, server_default=text("'{}'::varchar[]")
    )


class Pipeline(UUIDPrimaryKey, Timestamps, Base):
    """A generated (or edited) CI/CD definition: ordered stages plus exportable YAML."""

    __tablename__ = "pipelines"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # Denormalised from the project so tenant filters need no join (NULL for user-owned projects).
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    generated_by_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="SET NULL"), index=True
    )
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    pipeline_type: Mapped[str] = mapped_column(
        String(50), default="full_cicd", server_default="full_cicd"
    )
    # on_push {branches, paths}, on_pull_request {branches}, schedule (cron), manual.
    triggers: Mapped[dict[str, Any]] = json_object()
    # Detected framework, commands, caching, default image, environment variable names.
    config: Mapped[dict[str, Any]] = json_object()
    status: Mapped[str] = mapped_column(String(50), default="active", server_default="active")
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    github_actions_yaml: Mapped[str | None] = mapped_column(Text)
    gitlab_ci_yaml: Mapped[str | None] = mapped_column(Text)
    # Default retry policy of stages: max_attempts, backoff, retryable exit codes.
    retry_policy: Mapped[dict[str, Any]] = json_object()
    # Maximum concurrent runs of this pipeline (NULL: only the organization's plan limit).
    concurrency: Mapped[int | None] = mapped_column(Integer)
    next_run_number: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # Deleted through the API: hidden from lists and reads, starts no run; its runs are kept.
    archived_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    # Proven by running it (a generation with verification): true with the green run, false
    # with the failing stage, its diagnosis and evidence lines (`verification`); NULL: never run.
    verified: Mapped[bool | None] = mapped_column(Boolean)
    verified_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    stages: Mapped[list[PipelineStage]] = relationship(
        back_populates="pipeline",
        lazy="raise",
        passive_deletes=True,
        order_by="PipelineStage.position",
    )

    __table_args__ = (
        check_in("pipeline_type", PIPELINE_TYPES),
        check_in("status", PIPELINE_STATUSES),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("concurrency IS NULL OR concurrency > 0", name="concurrency_positive"),
        Index("ix_pipelines_project_id_created_at", "project_id", "created_at", "id"),
        Index("ix_pipelines_status", "status"),
    )


class PipelineStage(UUIDPrimaryKey, Timestamps, Base):
    """One stage of a pipeline; `position` orders the stages (`order` is a reserved word in SQL)."""

    __tablename__ = "pipeline_stages"

    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    stage_type: Mapped[str] = mapped_column(String(50))
    image: Mapped[str | None] = mapped_column(String(500))
    # [{"name": ..., "run": ...}, ...]
    commands: Mapped[list[Any]] = json_array()
    # {"branch": [...], "files_changed": [...], "previous_stage_status": "success"}
    conditions: Mapped[dict[str, Any]] = json_object()
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=600, server_default=text("600"))
    depends_on: Mapped[list[str]] = _string_array(100)
    retry_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    retryable_exit_codes: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), default=list, server_default=text("'{}'::integer[]")
    )
    allow_failure: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    artifact_paths: Mapped[list[str]] = _string_array(1000)
    cache_paths: Mapped[list[str]] = _string_array(1000)
    network_enabled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    working_directory: Mapped[str | None] = mapped_column(String(1000))
    # Non-secret environment variables; secrets are referenced by name only.
    environment: Mapped[dict[str, Any]] = json_object()
    # {"services": [...], "matrix": {...}, "cache_key": {...}} as in the pipeline document.
    runtime: Mapped[dict[str, Any]] = json_object()

    pipeline: Mapped[Pipeline] = relationship(back_populates="stages", lazy="raise")

    __table_args__ = (
        UniqueConstraint("pipeline_id", "name"),
        Index("ix_pipeline_stages_pipeline_id_position", "pipeline_id", "position"),
        check_in("stage_type", STAGE_TYPES),
        CheckConstraint("timeout_seconds > 0", name="timeout_positive"),
        CheckConstraint("retry_count >= 0", name="retry_count_non_negative"),
        CheckConstraint("position >= 0", name="position_non_negative"),
    )


class PipelineRun(UUIDPrimaryKey, Timestamps, Base):
    """One execution of a pipeline at a commit; driven by the PipelineRunWorkflow."""

    __tablename__ = "pipeline_runs"

    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="queued", server_default="queued")
    trigger: Mapped[str] = mapped_column(String(20), default="manual", server_default="manual")
    branch: Mapped[str | None] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    commit_message: Mapped[str | None] = mapped_column(Text)
    # Names only: values are encrypted (env_vars_encrypted) and masked in logs.
    env_var_names: Mapped[list[str]] = _string_array(128)
    env_vars_encrypted: Mapped[str | None] = mapped_column(Text)
    # The variables every stage of the run sees, taken when it starts (the run's own, its
    # project's and its project's environments', secret values still encrypted); cleared when
    # the run finishes. Later edits apply to later runs.
    variables_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    rerun_of_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL")
    )
    # Stages that succeeded in this earlier run (same commit and spec) are reused, not re-run.
    reuse_from_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL")
    )
    triggered_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    triggered_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    queued_at: Mapped[datetime] = mapped_column(TZ_DATETIME, server_default=text("now()"))
    started_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    finished_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = json_object("metadata")
    # The stored pipeline version the run was created under, and what it executed: that version
    # (`stored`) or the `.forgeline.yml` of its commit (`repository`).
    pipeline_version: Mapped[int | None] = mapped_column(Integer)
    pipeline_source: Mapped[str] = mapped_column(
        String(20), default="stored", server_default="stored"
    )

    stage_executions: Mapped[list[StageExecution]] = relationship(
        back_populates="run", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        UniqueConstraint("pipeline_id", "run_number"),
        check_in("status", RUN_STATUSES),
        check_in("trigger", RUN_TRIGGERS),
        check_in("pipeline_source", ("stored", "repository")),
        CheckConstraint("run_number > 0", name="run_number_positive"),
        Index("ix_pipeline_runs_pipeline_id_created_at", "pipeline_id", "created_at", "id"),
        Index("ix_pipeline_runs_project_id_created_at", "project_id", "created_at", "id"),
        Index("ix_pipeline_runs_status", "status"),
        Index("ix_pipeline_runs_started_at", "started_at"),
        # Per-organization build concurrency: count and order the unfinished runs cheaply.
        Index(
            "ix_pipeline_runs_organization_id_active",
            "organization_id",
            "queued_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )


class StageExecution(UUIDPrimaryKey, Timestamps, Base):
    """One attempt of one stage in a run (a retry is a new row with attempt + 1)."""

    __tablename__ = "stage_executions"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    stage_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_stages.id", ondelete="SET NULL"), index=True
    )
    stage_name: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    runner: Mapped[str | None] = mapped_column(String(20))
    container_name: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    finished_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    log_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    log_line_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Set when the final log (over 1 MB) moved to the object store; log_tail keeps the end.
    log_object_key: Mapped[str | None] = mapped_column(String(1024))
    log_tail: Mapped[str | None] = mapped_column(Text)
    reused_from_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("stage_executions.id", ondelete="SET NULL")
    )
    skip_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # What the attempt did not keep (log past its limit, artifacts past theirs), in words.
    warnings: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'::text[]")
    )
    # A failed or timed-out attempt: whose fault it was, why, and the (masked) log lines that
    # show it. The class decides whether the stage is retried.
    failure_class: Mapped[str | None] = mapped_column(String(20))
    failure_cause: Mapped[str | None] = mapped_column(Text)
    failure_evidence: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'::text[]")
    )

    run: Mapped[PipelineRun] = relationship(back_populates="stage_executions", lazy="raise")

    __table_args__ = (
        UniqueConstraint("run_id", "stage_name", "attempt"),
        check_in("status", STAGE_EXECUTION_STATUSES),
        check_in("runner", RUNNERS),
        check_in("failure_class", tuple(FailureClass)),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        Index("ix_stage_executions_status", "status"),
    )


class StageLogChunk(UUIDPrimaryKey, Base):
    """A sequence-numbered batch of masked log lines, stored as they arrive (SSE resumes by seq)."""

    __tablename__ = "stage_log_chunks"

    stage_execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("stage_executions.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    first_line: Mapped[int] = mapped_column(Integer)
    line_count: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("stage_execution_id", "seq"),
        CheckConstraint("seq >= 0 AND first_line >= 0 AND line_count >= 0", name="counters"),
    )


class Artifact(UUIDPrimaryKey, Base):
    """A file a stage declared, uploaded to the object store under a run-scoped key."""

    __tablename__ = "artifacts"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True
    )
    stage_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("stage_executions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(500))
    object_key: Mapped[str] = mapped_column(String(1024), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint("size_bytes >= 0", name="size_non_negative"),)


class BuildSlots(Base):
    """An organization's build-slot semaphore: its limit, and the row its claims lock on.

    Keyed like the runs' slot key: the organization's ID (`project-<id>` for a project without
    one). Acquiring and releasing lock this row, so the count and the queue stay consistent.
    """

    __tablename__ = "build_slots"

    organization_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot_limit: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        TZ_DATETIME, nullable=False, server_default=text("now()")
    )

    __table_args__ = (CheckConstraint("slot_limit >= 1", name="slot_limit_positive"),)


class BuildSlotClaim(Base):
    """A run holding one of its organization's build slots, or waiting for one, in the order
    the runs were triggered (`queued_at`, the run's trigger time; then `seq`).

    `grant_pending`: promoted from the queue, the run's grant signal not yet delivered; whoever
    touches the semaphore next sends it again, so a crash between commit and signal loses nothing.
    `seq` tells a claim from an earlier one of the same run: a grant names the claim it is for.
    """

    __tablename__ = "build_slot_claims"

    organization_key: Mapped[str] = mapped_column(
        ForeignKey("build_slots.organization_key", ondelete="CASCADE"), primary_key=True
    )
    run_workflow_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    holding: Mapped[bool] = mapped_column(Boolean)
    grant_pending: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    queued_at: Mapped[datetime] = mapped_column(
        TZ_DATETIME, nullable=False, server_default=text("now()")
    )
    granted_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        Index(
            "ix_build_slot_claims_organization_key_holding_seq",
            "organization_key",
            "holding",
            "seq",
        ),
        Index(
            "ix_build_slot_claims_organization_key_holding_queued_at",
            "organization_key",
            "holding",
            "queued_at",
            "seq",
        ),
    )
