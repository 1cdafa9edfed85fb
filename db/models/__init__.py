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
from db.models.agent import (
    AgentExecution,
    AgentStep,
    AgentTask,
    CodeReview,
    TestResult,
    ToolInvocation,
)
from db.models.billing import (
    Invoice,
    Payment,
    PaymentMethod,
    Plan,
    PlanFeature,
    Subscription,
    UsageRecord,
)
from db.models.deployments import (
    Deployment,
    DeploymentContainer,
    DeploymentHealthCheck,
    DeploymentRuntimeLog,
    InfrastructureResource,
)
from db.models.integrations import PullRequest, WebhookPayload
from db.models.operations import AuditLog, SystemMetric, WorkflowExecution
from db.models.pipelines import (
    Artifact,
    BuildSlotClaim,
    BuildSlots,
    Pipeline,
    PipelineRun,
    PipelineStage,
    StageExecution,
    StageLogChunk,
)
from db.models.projects import (
    Environment,
    GitProviderConnection,
    Project,
    ProjectFile,
    Repository,
)

__all__ = [
    "AgentExecution",
    "AgentStep",
    "AgentTask",
    "ApiKey",
    "Artifact",
    "AuditLog",
    "BuildSlotClaim",
    "BuildSlots",
    "CodeReview",
    "Deployment",
    "DeploymentContainer",
    "DeploymentHealthCheck",
    "DeploymentRuntimeLog",
    "Environment",
    "GitProviderConnection",
    "InfrastructureResource",
    "Invoice",
    "Notification",
    "Organization",
    "OrganizationMember",
    "PasswordResetToken",
    "Payment",
    "PaymentMethod",
    "Pipeline",
    "PipelineRun",
    "PipelineStage",
    "Plan",
    "PlanFeature",
    "Project",
    "ProjectFile",
    "ProjectMember",
    "PullRequest",
    "Repository",
    "StageExecution",
    "StageLogChunk",
    "Subscription",
    "SystemMetric",
    "TestResult",
    "ToolInvocation",
    "UsageRecord",
    "User",
    "UserPreference",
    "UserSession",
    "WebhookPayload",
    "WorkflowExecution",
]
