"""Inbound integrations: provider webhooks (deduplicated by delivery ID) and pull requests."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import TZ_DATETIME, check_in, created_at_column, json_array, json_object

WEBHOOK_PROVIDERS = ("github", "gitlab", "bitbucket", "stripe")
WEBHOOK_STATUSES = ("received", "processed", "ignored", "failed")
PR_STATUSES = ("open", "draft", "merged", "closed")
CHECK_STATUSES = ("pending", "running", "success", "failure", "skipped")


class WebhookPayload(UUIDPrimaryKey, Base):
    """A received webhook delivery; a redelivery of the same ID is recognised, not reprocessed."""

    __tablename__ = "webhook_payloads"

    provider: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(100))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"), index=True
    )
    payload: Mapped[dict[str, Any]] = json_object()
    # Selected headers only (event, delivery, signature scheme) - never auth secrets.
    headers: Mapped[dict[str, Any]] = json_object()
    signature_valid: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20), default="received", server_default="received")
    received_at: Mapped[datetime] = created_at_column()
    processed_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("provider", "delivery_id"),
        check_in("provider", WEBHOOK_PROVIDERS),
        check_in("status", WEBHOOK_STATUSES),
        Index("ix_webhook_payloads_provider_received_at", "provider", "received_at"),
    )


class PullRequest(UUIDPrimaryKey, Timestamps, Base):
    """A pull/merge request of a project's repository, with CI, review and quality status."""

    __tablename__ = "pr_tracking"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    repository_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="SET NULL")
    )
    pr_number: Mapped[int] = mapped_column(Integer)
    pr_url: Mapped[str] = mapped_column(String(500))
    repository_name: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    branch_name: Mapped[str] = mapped_column(String(255))
    base_branch: Mapped[str] = mapped_column(String(255), default="main", server_default="main")
    head_sha: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="open", server_default="open")
    ci_status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    review_status: Mapped[str] = mapped_column(
        String(20), default="pending", server_default="pending"
    )
    security_scan_status: Mapped[str] = mapped_column(
        String(20), default="pending", server_default="pending"
    )
    test_coverage_percentage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    quality_score: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    lines_added: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lines_deleted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    files_changed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    commits_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    latest_pipeline_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL")
    )
    preview_environment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("environments.id", ondelete="SET NULL")
    )
    agent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="SET NULL")
    )
    author: Mapped[str | None] = mapped_column(String(255))
    assignees: Mapped[list[Any]] = json_array()
    reviewers: Mapped[list[Any]] = json_array()
    labels: Mapped[list[Any]] = json_array()
    merged_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    closed_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    # The one comment Forgeline keeps on the pull request (edited on every push).
    comment_id: Mapped[str | None] = mapped_column(String(64))
    # SHA-256 of the body last published: an unchanged comment is not edited again.
    comment_digest: Mapped[str | None] = mapped_column(String(64))
    # pipeline id -> {name, run_id, status}: the latest run of each pipeline for this PR.
    pipeline_checks: Mapped[dict[str, Any]] = json_object()
    # Why no coverage figure is shown (a report too large, malformed, refused).
    coverage_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("project_id", "pr_number"),
        check_in("status", PR_STATUSES),
        check_in("ci_status", CHECK_STATUSES),
        check_in("security_scan_status", CHECK_STATUSES),
        Index("ix_pr_tracking_repository_name_pr_number", "repository_name", "pr_number"),
        Index("ix_pr_tracking_ci_status", "ci_status"),
        Index("ix_pr_tracking_quality_score", "quality_score"),
    )


class CommitStatusTurn(Base):
    """The run whose commit status (or check run) is on its way to the forge, and until when the
    report that took the turn may hold it: a run's reports are sent one at a time without a
    database connection held while the forge answers. The row is deleted when the report ends;
    one left by a crashed report is taken over once `expires_at` has passed."""

    __tablename__ = "commit_status_turns"

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
