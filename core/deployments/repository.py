"""Reads of deployments and the rows around them (environments, runs, approvals), scoped to an
organization where a caller names one: another tenant's ID is a NotFound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.accounts import ApiKey, OrganizationMember
from db.models.deployments import (
    Deployment,
    DeploymentApproval,
    DeploymentContainer,
    DeploymentHealthCheck,
    DeploymentRuntimeLog,
)
from db.models.pipelines import Artifact, PipelineRun
from db.models.projects import Environment, Project
from forgeline.errors import NotFound, found
from forgeline.statuses.deployments import HEALTHY_STATUSES, DeploymentStatus
from workflows.deployment_models import DeploymentRuntimeConfig

# --- tenant-scoped lookups ---------------------------------------------------------------------


async def environment_for(
    session: AsyncSession, organization_id: uuid.UUID, environment_id: uuid.UUID
) -> tuple[Environment, Project]:
    row = (
        await session.execute(
            select(Environment, Project)
            .join(Project, Project.id == Environment.project_id)
            .where(Environment.id == environment_id, Project.organization_id == organization_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("environment not found", resource_type="environment")
    return row[0], row[1]


async def environment_in_project(
    session: AsyncSession,
    environment_id: uuid.UUID,
    project_id: uuid.UUID,
    organization_id: uuid.UUID | None,
) -> tuple[Environment, Project] | None:
    """The environment when it belongs to this project of this organization."""
    row = (
        await session.execute(
            select(Environment, Project)
            .join(Project, Project.id == Environment.project_id)
            .where(
                Environment.id == environment_id,
                Project.id == project_id,
                Project.organization_id == organization_id,
            )
        )
    ).one_or_none()
    return None if row is None else (row[0], row[1])


async def deployment_for(
    session: AsyncSession, organization_id: uuid.UUID, deployment_id: uuid.UUID
) -> Deployment:
    return found(
        await session.scalar(
            select(Deployment).where(
                Deployment.id == deployment_id,
                Deployment.organization_id == organization_id,
                Deployment.deleted_at.is_(None),
            )
        ),
        "deployment",
    )


async def require_project(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID
) -> None:
    found(
        await session.scalar(
            select(Project.id).where(
                Project.id == project_id, Project.organization_id == organization_id
            )
        ),
        "project",
    )


def environment_deployments(environment_id: uuid.UUID) -> Select[Deployment]:
    """The environment's deployments, for keyset pagination by (created_at, id)."""
    return select(Deployment).where(
        Deployment.environment_id == environment_id, Deployment.deleted_at.is_(None)
    )


def project_deployments(project_id: uuid.UUID) -> Select[Deployment]:
    return select(Deployment).where(
        Deployment.project_id == project_id, Deployment.deleted_at.is_(None)
    )


# --- detail ------------------------------------------------------------------------------------


async def health_checks(
    session: AsyncSession, deployment_id: uuid.UUID, limit: int = 100
) -> Sequence[DeploymentHealthCheck]:
    return (
        await session.scalars(
            select(DeploymentHealthCheck)
            .where(DeploymentHealthCheck.deployment_id == deployment_id)
            .order_by(DeploymentHealthCheck.check_number.desc())
            .limit(limit)
        )
    ).all()


async def containers(
    session: AsyncSession, deployment_id: uuid.UUID
) -> Sequence[DeploymentContainer]:
    return (
        await session.scalars(
            select(DeploymentContainer).where(DeploymentContainer.deployment_id == deployment_id)
        )
    ).all()


async def latest_runtime_logs(
    session: AsyncSession, deployment_id: uuid.UUID, limit: int
) -> list[DeploymentRuntimeLog]:
    """The last `limit` lines, oldest first."""
    newest = (
        await session.scalars(
            select(DeploymentRuntimeLog)
            .where(DeploymentRuntimeLog.deployment_id == deployment_id)
            .order_by(DeploymentRuntimeLog.seq.desc())
            .limit(limit)
        )
    ).all()
    return list(reversed(newest))


async def published_site(session: AsyncSession, deployment_id: uuid.UUID) -> Deployment | None:
    """A live (not deleted) `static` deployment, for its public files."""
    return await session.scalar(
        select(Deployment).where(
            Deployment.id == deployment_id,
            Deployment.provider == "static",
            Deployment.deleted_at.is_(None),
        )
    )


# --- people ------------------------------------------------------------------------------------


async def person_behind(
    session: AsyncSession, user_id: uuid.UUID | None, api_key_id: uuid.UUID | None
) -> uuid.UUID | None:
    """The person who asked: the signed-in user, or the user an API key belongs to (a key is
    its creator acting, so it cannot approve what its creator may not)."""
    if user_id is not None or api_key_id is None:
        return user_id
    creator: uuid.UUID | None = await session.scalar(
        select(ApiKey.created_by_user_id).where(ApiKey.id == api_key_id)
    )
    return creator


async def triggering_person(session: AsyncSession, deployment: Deployment) -> uuid.UUID | None:
    """The person behind a deployment: who requested it (directly or through their API key),
    else who triggered the pipeline run that created it (rows written before the key's owner
    was recorded on them included)."""
    person = await person_behind(
        session, deployment.triggered_by_user_id, deployment.triggered_by_api_key_id
    )
    if person is None and deployment.pipeline_run_id is not None:
        run = (
            await session.execute(
                select(PipelineRun.triggered_by_user_id, PipelineRun.triggered_by_api_key_id).where(
                    PipelineRun.id == deployment.pipeline_run_id
                )
            )
        ).one_or_none()
        if run is not None:
            person = await person_behind(session, run[0], run[1])
    return person


async def decisions(
    session: AsyncSession, deployment_id: uuid.UUID
) -> Sequence[DeploymentApproval]:
    return (
        await session.scalars(
            select(DeploymentApproval)
            .where(DeploymentApproval.deployment_id == deployment_id)
            .order_by(DeploymentApproval.decided_at, DeploymentApproval.id)
        )
    ).all()


async def members_with_roles(
    session: AsyncSession, organization_id: uuid.UUID, roles: Sequence[str]
) -> list[uuid.UUID]:
    members = await session.scalars(
        select(OrganizationMember.user_id)
        .where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.role.in_(roles),
        )
        .order_by(OrganizationMember.user_id)
    )
    return list(members)


# --- what to deploy ----------------------------------------------------------------------------


async def run_in_project(
    session: AsyncSession, project_id: uuid.UUID, run_id: uuid.UUID
) -> PipelineRun | None:
    return await session.scalar(
        select(PipelineRun).where(PipelineRun.id == run_id, PipelineRun.project_id == project_id)
    )


async def newest_successful_run(
    session: AsyncSession, project_id: uuid.UUID, commit_sha: str, branch: str | None
) -> uuid.UUID | None:
    """The newest successful run of a commit (full SHA or a prefix) in the project."""
    query = select(PipelineRun.id).where(
        PipelineRun.project_id == project_id,
        PipelineRun.status == "success",
        PipelineRun.commit_sha.startswith(commit_sha.lower(), autoescape=True),
    )
    if branch is not None:
        query = query.where(PipelineRun.branch == branch)
    run_id: uuid.UUID | None = await session.scalar(
        query.order_by(PipelineRun.finished_at.desc().nulls_last(), PipelineRun.id.desc()).limit(1)
    )
    return run_id


async def run_archives(session: AsyncSession, run_id: uuid.UUID) -> list[Artifact]:
    """The run's `.tar.gz` artifacts, newest first."""
    artifacts = (
        await session.scalars(
            select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.created_at.desc())
        )
    ).all()
    return [a for a in artifacts if a.object_key.endswith((".tar.gz", ".tgz"))]


# --- healthy versions --------------------------------------------------------------------------


async def last_healthy_before(session: AsyncSession, deployment: Deployment) -> Deployment | None:
    return await session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == deployment.environment_id,
            Deployment.id != deployment.id,
            Deployment.status.in_(HEALTHY_STATUSES),
            Deployment.deleted_at.is_(None),
            Deployment.created_at <= deployment.created_at,
        )
        .order_by(Deployment.finished_at.desc().nulls_last(), Deployment.created_at.desc())
        .limit(1)
    )


async def previous_healthy(
    session: AsyncSession, environment_id: str, exclude_deployment_id: str
) -> Deployment | None:
    """The most recent deployment of the environment that was healthy (active or superseded)."""
    result = await session.execute(
        select(Deployment)
        .where(
            and_(
                Deployment.environment_id == uuid.UUID(environment_id),
                Deployment.id != uuid.UUID(exclude_deployment_id),
                Deployment.status.in_(HEALTHY_STATUSES),
                Deployment.deleted_at.is_(None),
            )
        )
        .order_by(Deployment.finished_at.desc().nulls_last(), Deployment.created_at.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def newer_live(
    session: AsyncSession, environment_id: str, deployment_id: str
) -> Deployment | None:
    """The environment's live deployment when it was requested after `deployment_id`: an older
    deployment must not replace it."""
    mine = select(Deployment.created_at).where(Deployment.id == uuid.UUID(deployment_id))
    return await session.scalar(
        select(Deployment)
        .where(
            Deployment.environment_id == uuid.UUID(environment_id),
            Deployment.status == DeploymentStatus.ACTIVE,
            Deployment.id != uuid.UUID(deployment_id),
            Deployment.created_at > mine.scalar_subquery(),
        )
        .limit(1)
    )


async def is_active(session: AsyncSession, deployment_id: str) -> bool:
    status = await session.scalar(
        select(Deployment.status).where(
            Deployment.id == uuid.UUID(deployment_id), Deployment.deleted_at.is_(None)
        )
    )
    return status == DeploymentStatus.ACTIVE


# --- what the release activities read ----------------------------------------------------------


async def container_port(session: AsyncSession, deployment_id: str) -> int:
    snapshot = await session.scalar(
        select(Deployment.config_snapshot).where(Deployment.id == uuid.UUID(deployment_id))
    )
    return DeploymentRuntimeConfig.model_validate(snapshot or {}).container_port


async def artifact_key(session: AsyncSession, deployment_id: str) -> str | None:
    key: str | None = await session.scalar(
        select(Deployment.artifact_key).where(Deployment.id == uuid.UUID(deployment_id))
    )
    return key


async def environment_deployment_ids(session: AsyncSession, environment_id: str) -> list[str]:
    ids = await session.scalars(
        select(Deployment.id).where(Deployment.environment_id == uuid.UUID(environment_id))
    )
    return [str(i) for i in ids]


async def requested_at(session: AsyncSession, deployment_id: str) -> datetime | None:
    """When the deployment was requested (its row's creation)."""
    created: datetime | None = await session.scalar(
        select(Deployment.created_at).where(Deployment.id == uuid.UUID(deployment_id))
    )
    return created


@dataclass(frozen=True)
class BuildScope:
    """Whose build it is: where its context may come from, and what its site publishes."""

    organization_id: str | None = None
    pipeline_run_id: str | None = None
    publish_dotfiles: bool = False


async def build_scope(session: AsyncSession, deployment_id: str) -> BuildScope:
    row = await session.get(Deployment, uuid.UUID(deployment_id))
    if row is None:
        return BuildScope()
    config = DeploymentRuntimeConfig.model_validate(row.config_snapshot or {})
    return BuildScope(
        organization_id=str(row.organization_id),
        pipeline_run_id=str(row.pipeline_run_id) if row.pipeline_run_id else None,
        publish_dotfiles=config.publish_dotfiles,
    )


async def restorable(session: AsyncSession, deployment_id: str) -> Deployment | None:
    """An earlier deployment to serve again, while its environment exists."""
    row = await session.get(Deployment, uuid.UUID(deployment_id))
    if row is None or await session.get(Environment, row.environment_id) is None:
        return None
    return row


async def environment_release_config(
    session: AsyncSession, environment_id: str
) -> DeploymentRuntimeConfig | None:
    """Where an environment's releases live (bucket, region), while the environment exists."""
    env = await session.get(Environment, uuid.UUID(environment_id))
    if env is None:
        return None
    return DeploymentRuntimeConfig.model_validate(
        {k: v for k, v in (env.config or {}).items() if k in ("bucket_name", "region")}
    )
