"""The configuration a deployment is released with: the environment's settings snapshotted on
the deployment's row (health policy, port, plain variables), and the workflow input built from
that row, so a rollback or a retried stage releases exactly what was requested."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.deployments.site_config import site_config
from db.models.deployments import Deployment
from db.models.projects import Environment, Project
from forgeline.environment_variables import reveal
from forgeline.settings import Settings
from workflows.deployment_models import (
    DeploymentInput,
    DeploymentRuntimeConfig,
    DeploymentSource,
    HealthCheckPolicy,
)

APPROVER_ROLES = ["owner", "admin"]


def required_approvals(environment: Environment) -> int:
    """A protected environment needs at least one approval (none when unprotected)."""
    return max(1, environment.required_approvals) if environment.is_protected else 0


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


def runtime_config(
    environment: Environment, project: Project | None = None
) -> DeploymentRuntimeConfig:
    """The environment's config as released with this deployment (snapshotted on the row),
    with the project's static-site rules.

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
        site=site_config(project.config if project is not None else None),
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
        config=config or runtime_config(environment, project),
        approval_timeout_seconds=float(cfg.get("approval_timeout_seconds") or 24 * 3600),
        approver_roles=list(deployment.approver_roles or APPROVER_ROLES),
        required_approvals=max(1, deployment.required_approvals),
        rollback_of_deployment_id=str(deployment.rollback_of_id)
        if deployment.rollback_of_id
        else None,
        preview=environment.env_type == "preview",
        monitor_interval_seconds=float(cfg.get("monitor_interval_seconds") or 60),
    )


async def secret_variables(
    session: AsyncSession, settings: Settings, environment_id: uuid.UUID
) -> dict[str, str]:
    """The environment's secret variables, decrypted: for the release only, never a payload."""
    env = await session.get(Environment, environment_id)
    stored = (env.config or {}).get("environment_variables") if env else None
    if not isinstance(stored, list):
        return {}
    secrets = [v for v in stored if isinstance(v, dict) and v.get("secret")]
    return reveal(secrets, settings) if secrets else {}
