"""Status vocabularies of deployments, their containers and cloud resources, and environments.

The member order is the order the database check constraints list them in.
"""

from __future__ import annotations

from enum import StrEnum


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    AWAITING_APPROVAL = "awaiting_approval"
    BUILDING = "building"
    DEPLOYING = "deploying"
    VERIFYING = "verifying"
    ACTIVE = "active"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


# A deployment that reached these statuses once served traffic healthily.
HEALTHY_STATUSES: tuple[DeploymentStatus, ...] = (
    DeploymentStatus.ACTIVE,
    DeploymentStatus.SUPERSEDED,
)
# A deployment in these statuses has finished; its workflow does nothing more for it.
TERMINAL_STATUSES: tuple[DeploymentStatus, ...] = (
    DeploymentStatus.ACTIVE,
    DeploymentStatus.SUPERSEDED,
    DeploymentStatus.FAILED,
    DeploymentStatus.ROLLED_BACK,
    DeploymentStatus.REJECTED,
    DeploymentStatus.CANCELLED,
)


class ContainerStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    REMOVED = "removed"
    FAILED = "failed"


class ResourceStatus(StrEnum):
    """An infrastructure resource (an S3 bucket) a deployment provisioned."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


class EnvironmentStatus(StrEnum):
    ACTIVE = "active"
    PROVISIONING = "provisioning"
    FAILED = "failed"
    DELETED = "deleted"
