"""Requesting deployments, for the API and the pipeline's deploy stage alike: a new version, a
rollback to the last healthy one, a promotion to another environment; deleting one; a preview's
teardown. Each writes the intent row (flushed, not committed); the caller commits, then starts
the workflow."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.billing.limits import enforce_limit
from core.deployments import repository, sources
from core.deployments.config import (
    APPROVER_ROLES,
    required_approvals,
    runtime_config,
    workflow_input,
)
from core.deployments.providers import require_available
from db.models.deployments import Deployment
from db.models.projects import Environment, Project
from forgeline.errors import Conflict, ValidationFailed
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from forgeline.statuses.deployments import (
    HEALTHY_STATUSES,
    TERMINAL_STATUSES,
    DeploymentStatus,
    EnvironmentStatus,
)
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id, search_attributes
from workflows.deployment_models import (
    DeploymentInput,
    DeploymentRuntimeConfig,
    DeploymentSource,
    PreviewInput,
)
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id

DEFAULT_PREVIEW_TTL_SECONDS = 3 * 24 * 3600.0
MONTHLY_LIMIT = "deployments_per_month"


@dataclass(frozen=True)
class Requester:
    """Who asks for a deployment: a member, or an API key (acting as the member who made it)."""

    organization_id: uuid.UUID
    user_id: uuid.UUID | None
    api_key_id: uuid.UUID | None


@dataclass(frozen=True)
class VersionRequest:
    """What to deploy: a run, a commit's newest successful run, or a local checkout (dev)."""

    pipeline_run_id: uuid.UUID | None = None
    version: str | None = None
    commit_sha: str | None = None
    branch: str | None = None
    source_dir: str | None = None
    output_dir: str | None = None
    dockerfile: str | None = None


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
    if environment.status == EnvironmentStatus.DELETED:
        raise Conflict("environment is deleted")
    config = config or runtime_config(environment, project)
    # Approvals compare people: a key's deployment is its creator's.
    triggered_by_user_id = await repository.person_behind(
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
        status=DeploymentStatus.PENDING,
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


async def request_version(
    session: AsyncSession,
    settings: Settings,
    requester: Requester,
    environment_id: uuid.UUID,
    what: VersionRequest,
) -> tuple[Deployment, DeploymentInput]:
    """A new version for an environment: the source resolved, the monthly limit enforced."""
    environment, project = await repository.environment_for(
        session, requester.organization_id, environment_id
    )
    require_available(environment.provider)
    run_id = what.pipeline_run_id
    if run_id is None and what.commit_sha and not what.source_dir:
        run_id = await sources.run_for_commit(session, project, what.commit_sha, what.branch)
    if run_id is not None:
        source = await sources.source_from_run(session, settings, project, run_id)
    else:
        source = sources.local_source(
            settings,
            requester.organization_id,
            project,
            source_dir=what.source_dir,
            version=what.version,
            commit_sha=what.commit_sha,
            output_dir=what.output_dir,
            dockerfile=what.dockerfile,
        )
    await enforce_limit(session, requester.organization_id, MONTHLY_LIMIT)
    return await create_deployment(
        session,
        environment,
        project,
        source,
        triggered_by_user_id=await _person(session, requester),
        triggered_by_api_key_id=requester.api_key_id,
        pipeline_run_id=run_id,
    )


async def request_rollback(
    session: AsyncSession, requester: Requester, deployment_id: uuid.UUID
) -> tuple[Deployment, Deployment, DeploymentInput]:
    """Redeploy the last healthy version before this one: same artifact and same config.
    Answers the rolled-back deployment, the new one and its workflow input."""
    row = await repository.deployment_for(session, requester.organization_id, deployment_id)
    target = await repository.last_healthy_before(session, row)
    if target is None:
        raise Conflict("no earlier healthy deployment to roll back to")
    environment, project = await repository.environment_for(
        session, requester.organization_id, row.environment_id
    )
    deployment, inp = await create_deployment(
        session,
        environment,
        project,
        sources.artifact_source(target),
        triggered_by_user_id=await _person(session, requester),
        triggered_by_api_key_id=requester.api_key_id,
        config=DeploymentRuntimeConfig.model_validate(target.config_snapshot or {}),
        rollback_of_id=row.id,
    )
    return target, deployment, inp


async def request_promotion(
    session: AsyncSession,
    requester: Requester,
    deployment_id: uuid.UUID,
    target_environment_id: uuid.UUID,
) -> tuple[Deployment, DeploymentInput]:
    """Release a healthy deployment's artifact to another environment of its project."""
    row = await repository.deployment_for(session, requester.organization_id, deployment_id)
    if row.status not in HEALTHY_STATUSES:
        raise Conflict(f"only a healthy deployment can be promoted (this one is {row.status})")
    environment, project = await repository.environment_for(
        session, requester.organization_id, target_environment_id
    )
    if environment.project_id != row.project_id:
        raise ValidationFailed("the target environment belongs to another project")
    if environment.id == row.environment_id:
        raise ValidationFailed("the target environment is the deployment's own environment")
    if environment.provider != row.provider:
        raise ValidationFailed(
            f"cannot promote a {row.provider} artifact to a {environment.provider} environment"
        )
    return await create_deployment(
        session,
        environment,
        project,
        sources.artifact_source(row),
        triggered_by_user_id=await _person(session, requester),
        triggered_by_api_key_id=requester.api_key_id,
        pipeline_run_id=row.pipeline_run_id,
        promoted_from_id=row.id,
    )


async def delete_deployment(
    session: AsyncSession, organization_id: uuid.UUID, deployment_id: uuid.UUID
) -> Deployment:
    """Soft delete of a finished deployment that no longer serves."""
    row = await repository.deployment_for(session, organization_id, deployment_id)
    if row.status == DeploymentStatus.ACTIVE:
        raise Conflict("the active deployment cannot be deleted; deploy or roll back first")
    if row.status not in TERMINAL_STATUSES:
        raise Conflict(f"deployment is {row.status}; wait for it to finish")
    row.deleted_at = datetime.now(UTC)
    return row


async def preview_environment(
    session: AsyncSession, organization_id: uuid.UUID, environment_id: uuid.UUID
) -> Environment:
    environment, _ = await repository.environment_for(session, organization_id, environment_id)
    if environment.env_type != "preview":
        raise ValidationFailed("only preview environments are torn down")
    return environment


async def tear_down_preview(temporal: Client, environment_id: uuid.UUID) -> None:
    """Ask the preview's lifetime workflow to tear it down now."""
    handle = temporal.get_workflow_handle_for(
        PreviewEnvironmentWorkflow.run, preview_workflow_id(str(environment_id))
    )
    try:
        await handle.signal(PreviewEnvironmentWorkflow.teardown, "requested")
    except Exception as exc:
        raise Conflict("this preview has no running lifetime workflow") from exc


async def start_workflow(
    temporal: Client, inp: DeploymentInput, *, task_queue: str = DEPLOYMENTS_TASK_QUEUE
) -> None:
    """Start the deployment (after its row is committed); starting twice is harmless. A
    preview's first deployment starts its lifetime too, a later one extends it."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await temporal.start_workflow(
            DeploymentWorkflow.run,
            inp,
            id=deployment_workflow_id(inp.deployment_id),
            task_queue=task_queue,
            search_attributes=search_attributes(inp.organization_id, inp.project_id, "deployment"),
            memo={"environment": inp.environment_name, "version": inp.source.version},
        )
    if inp.preview:
        try:
            await temporal.start_workflow(
                PreviewEnvironmentWorkflow.run,
                PreviewInput(
                    environment_id=inp.environment_id,
                    organization_id=inp.organization_id,
                    project_id=inp.project_id,
                    provider=inp.provider,
                    ttl_seconds=DEFAULT_PREVIEW_TTL_SECONDS,
                ),
                id=preview_workflow_id(inp.environment_id),
                task_queue=task_queue,
                search_attributes=search_attributes(inp.organization_id, inp.project_id, "preview"),
            )
        except WorkflowAlreadyStartedError:
            # A new push extends the preview's lifetime.
            await temporal.get_workflow_handle(preview_workflow_id(inp.environment_id)).signal(
                PreviewEnvironmentWorkflow.extend
            )


async def _person(session: AsyncSession, requester: Requester) -> uuid.UUID | None:
    return await repository.person_behind(session, requester.user_id, requester.api_key_id)
