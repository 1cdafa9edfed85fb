"""Operational records: Temporal executions the product starts, the audit trail, system metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import TZ_DATETIME, check_in, created_at_column, json_array, json_object
from forgeline.statuses.accounts import ActorType

# Temporal's closed statuses plus `running`: these rows mirror Temporal executions.
WORKFLOW_STATUSES = (
    "running",
    "completed",
    "failed",
    "cancelled",
    "terminated",
    "timed_out",
    "continued_as_new",
)
ACTOR_TYPES = tuple(ActorType)
AUDIT_SEVERITIES = ("debug", "info", "notice", "warning", "error", "critical")
METRIC_TYPES = ("gauge", "counter", "histogram", "summary")


class WorkflowExecution(UUIDPrimaryKey, Timestamps, Base):
    """One row per Temporal workflow execution started by the product, for operators and lists."""

    __tablename__ = "workflow_executions"

    # agent_task, pipeline_run, deployment, billing, preview_teardown, ... (free-form on purpose:
    # new workflow kinds must not need a migration).
    kind: Mapped[str] = mapped_column(String(64))
    workflow_type: Mapped[str | None] = mapped_column(String(255))
    workflow_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(64))
    task_queue: Mapped[str | None] = mapped_column(String(255))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    # The business row the workflow drives (agent task, pipeline run, deployment, invoice...).
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[uuid.UUID | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(32), default="running", server_default="running")
    parent_workflow_id: Mapped[str | None] = mapped_column(String(255))
    parent_run_id: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    tags: Mapped[list[Any]] = json_array()
    search_attributes: Mapped[dict[str, Any]] = json_object()
    memo: Mapped[dict[str, Any]] = json_object()
    started_at: Mapped[datetime] = mapped_column(TZ_DATETIME, server_default=text("now()"))
    closed_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("uq_workflow_executions_workflow_id_run_id", "workflow_id", "run_id", unique=True),
        check_in("status", WORKFLOW_STATUSES),
        Index(
            "ix_workflow_executions_organization_id_started_at",
            "organization_id",
            text("started_at DESC"),
            "id",
        ),
        Index("ix_workflow_executions_resource", "resource_type", "resource_id"),
        # Operators' "what is running now" list, highest priority first.
        Index(
            "ix_workflow_executions_running_priority",
            text("priority DESC"),
            text("started_at DESC"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_workflow_executions_kind_status", "kind", "status"),
        Index("ix_workflow_executions_tags_gin", "tags", postgresql_using="gin"),
    )


class AuditLog(UUIDPrimaryKey, Base):
    """Who did what to which resource, with before/after values; written in the same transaction."""

    __tablename__ = "audit_logs"

    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    actor_api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(100))
    resource_id: Mapped[uuid.UUID | None] = mapped_column()
    old_values: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    new_values: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    changed_fields: Mapped[list[str]] = mapped_column(
        ARRAY(String(100)), default=list, server_default=text("'{}'::varchar[]")
    )
    request_id: Mapped[str | None] = mapped_column(String(255))
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(20), default="info", server_default="info")
    metadata_: Mapped[dict[str, Any]] = json_object("metadata")
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        check_in("actor_type", ACTOR_TYPES),
        check_in("severity", AUDIT_SEVERITIES),
        # GET /v1/audit-logs: a tenant's trail, newest first, keyset by (created_at, id).
        Index(
            "ix_audit_logs_organization_id_created_at_id",
            "organization_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_audit_logs_resource", "resource_type", "resource_id"),
        Index("ix_audit_logs_created_at", "created_at"),
        Index(
            "ix_audit_logs_severity_created_at",
            "severity",
            "created_at",
            postgresql_where=text("severity IN ('warning', 'error', 'critical')"),
        ),
    )


class SystemMetric(UUIDPrimaryKey, Base):
    """A point of a time series (queue depth, run duration, error rate), with free dimensions."""

    __tablename__ = "system_metrics"

    metric_category: Mapped[str] = mapped_column(String(50))
    metric_name: Mapped[str] = mapped_column(String(100))
    metric_type: Mapped[str] = mapped_column(String(20), default="gauge", server_default="gauge")
    numeric_value: Mapped[Decimal | None] = mapped_column(Numeric(20, 6))
    string_value: Mapped[str | None] = mapped_column(Text)
    boolean_value: Mapped[bool | None] = mapped_column(Boolean)
    json_value: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    aggregation_period: Mapped[str] = mapped_column(
        String(50), default="instant", server_default="instant"
    )
    dimensions: Mapped[dict[str, Any]] = json_object()
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    workflow_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflow_executions.id", ondelete="SET NULL"), index=True
    )
    source_component: Mapped[str | None] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        check_in("metric_type", METRIC_TYPES),
        Index(
            "ix_system_metrics_category_name_recorded_at",
            "metric_category",
            "metric_name",
            "recorded_at",
        ),
        Index("ix_system_metrics_recorded_at", "recorded_at"),
        Index("ix_system_metrics_dimensions_gin", "dimensions", postgresql_using="gin"),
    )
