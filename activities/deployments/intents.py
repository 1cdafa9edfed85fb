"""Deployment intents shared by the API and the pipeline deploy stage: tenant-scoped environment
lookup, the runtime config snapshot, the deployments row and the DeploymentWorkflow input."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activities.deployments.providers import require_available
from db.models.accounts import ApiKey
from db.models.deployments import Deployment
from db.models.pipelines import Artifact, PipelineRun
from db.models.projects import Environment, Project
from forgeline.errors import Conflict, NotFound, ValidationFailed
from forgeline.settings import Settings
from workflows.deployment import deployment_workflow_id
from workflows.deployment_models import (
    DeploymentInput,
    DeploymentRuntimeConfig,
    DeploymentSource,
    HealthCheckPolicy,
)

APPROVER_ROLES = ["owner", "admin"]


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


def required_approvals(environment: Environment) -> int:
    """A protected environment needs at least one approval (none when unprotected)."""
    return max(1, environment.required_approvals) if environment.is_protected else 0


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


def _first(cfg: dict[str, Any], *names: str) -> Any:
    return next((cfg[n] for n in names if cfg.get(n) not in (None, "")), None)


def plain_variables(raw: Any) -> dict[str, str]:
    """Non-secret variables only: secret values stay encrypted in the environment row and are
    revealed inside the release activity, never carried in a workflow payload."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return {
            str(v["name"]): str(v.get("value", ""))
            for v in raw
            if isinstance(v, dict) and "name" in v and not v.get("secret")
        }
    return {}


def runtime_config(environment: Environment) -> DeploymentRuntimeConfig:
    """The environment's config as released with this deployment (snapshotted on the row).

    Reads the environments API's keys (`port`, `healthy_threshold`,
    `health_check_timeout_seconds`) and the finer-grained ones operators may set directly.
    """
    cfg: dict[str, Any] = dict(environment.config or {})
    health = HealthCheckPolicy(
        path=str(cfg.get("health_check_path") or "/"),
        required_passes=int(_first(cfg, "health_check_passes", "healthy_threshold") or 3),
        failure_threshold=int(cfg.get("health_check_failure_threshold") or 3),
        interval_seconds=float(cfg.get("health_check_interval_seconds") or 0.5),
        window_seconds=float(
            _first(cfg, "health_check_window_seconds", "health_check_timeout_seconds") or 30
        ),
        max_latency_ms=int(cfg.get("health_check_max_latency_ms") or 2000),
    )
    return DeploymentRuntimeConfig(
        container_port=int(_first(cfg, "container_port", "port") or 8080),
        environment_variables=plain_variables(cfg.get("environment_variables")),
        region=str(cfg.get("region") or "us-east-1"),
        bucket_name=cfg.get("bucket_name"),
        health=health,
        publish_dotfiles=cfg.get("publish_dotfiles") is True,
    )


def workflow_input(
    deployment: Deployment,
    environment: Environment,
    project: Project,
    source: DeploymentSource,
    *,
    config: DeploymentRuntimeConfig | None = None,
) -> DeploymentInput:
    """The workflow's input; the approval rules come from the deployment's own snapshot (what
    the environment said when it was requested), never from the environment as it is now."""
    cfg = environment.config or {}
    triggered_by = deployment.triggered_by_user_id
    return DeploymentInput(
        deployment_id=str(deployment.id),
        organization_id=str(project.organization_id),
        project_id=str(project.id),
        environment_id=str(environment.id),
        environment_name=environment.name,
        environment_type=environment.env_type,
        provider=environment.provider,
        protected=deployment.approval_protected,
        triggered_by_user_id=str(triggered_by) if triggered_by else None,
        pipeline_run_id=str(deployment.pipeline_run_id) if deployment.pipeline_run_id else None,
        source=source,
        config=config or runtime_config(environment),
        approval_timeout_seconds=float(cfg.get("approval_timeout_seconds") or 24 * 3600),
        approver_roles=list(deployment.approver_roles or APPROVER_ROLES),
        required_approvals=max(1, deployment.required_approvals),
        rollback_of_deployment_id=str(deployment.rollback_of_id)
        if deployment.rollback_of_id
        else None,
        preview=environment.env_type == "preview",
        monitor_interval_seconds=float(cfg.get("monitor_interval_seconds") or 60),
    )


async def create_deployment(
    session: AsyncSession,
    environment: Environment,
    project: Project,
    source: DeploymentSource,
    *,
    triggered_by_user_id: uuid.UUID | None,
    triggered_by_api_key_id: uuid.UUID | None = None,
    pipeline_run_id: uuid.UUID | None = None,
    config: DeploymentRuntimeConfig | None = None,
    rollback_of_id: uuid.UUID | None = None,
    promoted_from_id: uuid.UUID | None = None,
    deployment_id: uuid.UUID | None = None,
) -> tuple[Deployment, DeploymentInput]:
    """Validate and add the row (flushed, not committed): the caller commits, then starts."""
    require_available(environment.provider)
    if environment.status == "deleted":
        raise Conflict("environment is deleted")
    config = config or runtime_config(environment)
    # Approvals compare people: a key's deployment is its creator's.
    triggered_by_user_id = await person_behind(
        session, triggered_by_user_id, triggered_by_api_key_id
    )
    deployment = Deployment(
        id=deployment_id or uuid.uuid4(),
        environment_id=environment.id,
        project_id=project.id,
        organization_id=project.organization_id,
        pipeline_run_id=pipeline_run_id,
        version=source.version[:100],
        commit_sha=source.commit_sha,
        image_ref=source.image,
        artifact_key=source.static_prefix,
        status="pending",
        provider=environment.provider,
        config_snapshot=config.model_dump(mode="json"),
        triggered_by_user_id=triggered_by_user_id,
        triggered_by_api_key_id=triggered_by_api_key_id,
        approval_protected=environment.is_protected,
        required_approvals=required_approvals(environment),
        approver_roles=list(APPROVER_ROLES),
        rollback_of_id=rollback_of_id,
        promoted_from_id=promoted_from_id,
        is_preview=environment.env_type == "preview",
        preview_ref=environment.preview_branch,
    )
    deployment.workflow_id = deployment_workflow_id(str(deployment.id))
    session.add(deployment)
    await session.flush()
    inp = workflow_input(deployment, environment, project, source, config=config)
    return deployment, inp


async def source_for_run(
    session: AsyncSession, settings: Settings, project: Project, run: PipelineRun
) -> DeploymentSource:
    """What a pipeline run produced: its newest `.tar.gz` artifact (the deploy stage stores one of
    the workspace), else its workspace directory while the run still has it."""
    artifacts = (
        await session.scalars(
            select(Artifact).where(Artifact.run_id == run.id).order_by(Artifact.created_at.desc())
        )
    ).all()
    archive = next((a for a in artifacts if a.object_key.endswith((".tar.gz", ".tgz"))), None)
    workspace = settings.workspaces_dir / str(run.id)
    if archive is None and not workspace.is_dir():
        raise ValidationFailed("the pipeline run left no deployable source or build output")
    return DeploymentSource(
        version=(run.commit_sha or f"run-{run.run_number}")[:12],
        commit_sha=run.commit_sha,
        branch=run.branch,
        context_key=archive.object_key if archive else None,
        context_dir=None if archive else str(workspace),
        framework=project.framework,
        output_dir=(project.config or {}).get("output_directory"),
    )
