"""Deployments to environments: containers, health checks, runtime logs, infrastructure cost."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import (
    PRECISE_MONEY,
    TZ_DATETIME,
    check_in,
    created_at_column,
    json_array,
    json_object,
)
from db.models.projects import DEPLOY_PROVIDERS
from forgeline.statuses.deployments import ContainerStatus, DeploymentStatus, ResourceStatus

DEPLOYMENT_STATUSES = tuple(DeploymentStatus)
CONTAINER_STATUSES = tuple(ContainerStatus)
LOG_STREAMS = ("stdout", "stderr", "build", "system")
RESOURCE_STATUSES = tuple(ResourceStatus)


class Deployment(UUIDPrimaryKey, Timestamps, Base):
    """A release of one version to one environment; soft-deleted via `deleted_at`."""

    __tablename__ = "deployments"

    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    pipeline_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL"), index=True
    )
    version: Mapped[str] = mapped_column(String(100))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    image_ref: Mapped[str | None] = mapped_column(String(500))
    artifact_key: Mapped[str | None] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(30), default="pending", server_default="pending")
    provider: Mapped[str] = mapped_column(String(50))
    url: Mapped[str | None] = mapped_column(String(1000))
    # The environment config this release used, so a rollback restores image *and* config.
    config_snapshot: Mapped[dict[str, Any]] = json_object()
    triggered_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    triggered_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    approved_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    approved_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    approval_reason: Mapped[str | None] = mapped_column(Text)
    rejected_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    rejected_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # The approval rules the deployment was created under (a later change of the environment's
    # protection does not move a deployment already waiting): protected or not, how many distinct
    # approvers, and which roles approve.
    approval_protected: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    required_approvals: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    approver_roles: Mapped[list[str]] = json_array()
    # This deployment redeploys an earlier one (a rollback) ...
    rollback_of_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    # ... or, once rolled back, points at the deployment that replaced it.
    rolled_back_to_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    promoted_from_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    # Last check time, consecutive passes/failures, latency: the checks table has the detail.
    health_summary: Mapped[dict[str, Any]] = json_object()
    is_preview: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    preview_ref: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    finished_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    rolled_back_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    deleted_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    containers: Mapped[list[DeploymentContainer]] = relationship(
        back_populates="deployment", lazy="raise", passive_deletes=True
    )
    health_checks: Mapped[list[DeploymentHealthCheck]] = relationship(
        back_populates="deployment", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        check_in("status", DEPLOYMENT_STATUSES),
        check_in("provider", DEPLOY_PROVIDERS),
        # Lists hide soft-deleted rows; newest first per environment / project.
        Index(
            "ix_deployments_environment_id_created_at",
            "environment_id",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "ix_deployments_project_id_created_at",
            "project_id",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_deployments_status", "status"),
        # "Last healthy deployment of this environment" for rollbacks.
        Index(
            "ix_deployments_environment_id_healthy",
            "environment_id",
            "finished_at",
            postgresql_where=text("status IN ('active', 'superseded')"),
        ),
    )


class DeploymentApproval(UUIDPrimaryKey, Base):
    """One person's decision on a protected deployment: one row per (deployment, person), so a
    repeated or concurrent approval by the same person counts once."""

    __tablename__ = "deployment_approvals"

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    approved: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = created_at_column()

    __table_args__ = (UniqueConstraint("deployment_id", "user_id"),)


class DeploymentContainer(UUIDPrimaryKey, Base):
    """A container serving a deployment on a host port (named deterministically per deployment)."""

    __tablename__ = "deployment_containers"

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    container_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), unique=True)
    image: Mapped[str] = mapped_column(String(500))
    host: Mapped[str] = mapped_column(String(255), default="localhost", server_default="localhost")
    host_port: Mapped[int | None] = mapped_column(Integer)
    container_port: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="starting", server_default="starting")
    started_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    stopped_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    deployment: Mapped[Deployment] = relationship(back_populates="containers", lazy="raise")

    __table_args__ = (
        check_in("status", CONTAINER_STATUSES),
        CheckConstraint("host_port IS NULL OR host_port BETWEEN 1 AND 65535", name="host_port"),
        Index(
            "ix_deployment_containers_live_host_port",
            "host_port",
            postgresql_where=text("status IN ('starting', 'running')"),
        ),
    )


class DeploymentHealthCheck(UUIDPrimaryKey, Base):
    """One probe of a deployment's URL; `check_number` makes a retried probe idempotent."""

    __tablename__ = "deployment_health_checks"

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    check_number: Mapped[int] = mapped_column(Integer)
    # verify (before activation) or monitor (after).
    phase: Mapped[str] = mapped_column(String(20), default="verify", server_default="verify")
    url: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    error: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = created_at_column()

    deployment: Mapped[Deployment] = relationship(back_populates="health_checks", lazy="raise")

    __table_args__ = (
        UniqueConstraint("deployment_id", "check_number"),
        check_in("phase", ("verify", "monitor")),
    )


class DeploymentRuntimeLog(UUIDPrimaryKey, Base):
    """A line of build or container output, numbered per deployment."""

    __tablename__ = "deployment_runtime_logs"

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(BigInteger)
    stream: Mapped[str] = mapped_column(String(20), default="stdout", server_default="stdout")
    source: Mapped[str] = mapped_column(String(50), default="docker", server_default="docker")
    level: Mapped[str | None] = mapped_column(String(20))
    line: Mapped[str] = mapped_column(Text)
    logged_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("deployment_id", "seq"),
        check_in("stream", LOG_STREAMS),
    )


class InfrastructureResource(UUIDPrimaryKey, Timestamps, Base):
    """A cloud resource a deployment created (bucket, distribution, ...) with its monthly cost."""

    __tablename__ = "infrastructure_resources"

    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    environment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("environments.id", ondelete="SET NULL"), index=True
    )
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(50))
    resource_type: Mapped[str] = mapped_column(String(100))
    # Provider-side identifier (bucket name, ARN, container ID).
    resource_id: Mapped[str] = mapped_column(String(512))
    region: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = json_object()
    status: Mapped[str] = mapped_column(
        String(20), default="provisioning", server_default="provisioning"
    )
    monthly_cost: Mapped[Decimal | None] = mapped_column(PRECISE_MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    destroyed_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        UniqueConstraint("provider", "resource_id"),
        check_in("status", RESOURCE_STATUSES),
        CheckConstraint("monthly_cost IS NULL OR monthly_cost >= 0", name="cost_non_negative"),
        Index("ix_infrastructure_resources_resource_type", "resource_type"),
    )
