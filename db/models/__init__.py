"""Every ORM model, imported so that Base.metadata knows all tables (Alembic, tests)."""

from __future__ import annotations

from db.models.accounts import (
    ApiKey,
    Notification,
    Organization,
    OrganizationMember,
    PasswordResetToken,
    ProjectMember,
    User,
    UserPreference,
    UserSession,
)
from db.models.operations import AuditLog, SystemMetric, WorkflowExecution
from db.models.projects import (
    Environment,
    GitProviderConnection,
    Project,
    ProjectFile,
    Repository,
)

__all__ = [
    "ApiKey",
    "AuditLog",
    "Environment",
    "GitProviderConnection",
    "Notification",
    "Organization",
    "OrganizationMember",
    "PasswordResetToken",
    "Project",
    "ProjectFile",
    "ProjectMember",
    "Repository",
    "SystemMetric",
    "User",
    "UserPreference",
    "UserSession",
    "WorkflowExecution",
]
