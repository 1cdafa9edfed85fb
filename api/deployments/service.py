"""Deployment intents: write the row, commit, start the DeploymentWorkflow; approvals, rollback,
promotion and the static site host. Tenant scoping happens here (another org's ID is a 404)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, RPCTimeoutOrCancelledError, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from activities.deployments.intents import APPROVER_ROLES as APPROVER_ROLES
from activities.deployments.intents import create_deployment as create_deployment
from activities.deployments.intents import environment_for as environment_for
from activities.deployments.intents import person_behind, source_for_run
from activities.deployments.intents import plain_variables as plain_variables
from activities.deployments.intents import runtime_config as runtime_config
from activities.deployments.intents import workflow_input as workflow_input
from api.deployments.schemas import ApprovalOut, ApprovalsOut
from api.deps import Principal
from api.errors import ServiceUnavailable
from db.models.accounts import ApiKey, OrganizationMember
from db.models.deployments import Deployment, DeploymentApproval
from db.models.pipelines import PipelineRun
from db.models.projects import Project
from forgeline.errors import Conflict, NotFound
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id, search_attributes
from workflows.deployment_models import (
    HEALTHY_STATUSES,
    ApprovalDecision,
    ApprovalOutcome,
    DeploymentInput,
    DeploymentSource,
    PreviewInput,
)
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id

DEFAULT_PREVIEW_TTL_SECONDS = 3 * 24 * 3600.0
# How long an approve/reject request waits for the workflow to record the decision.
DECISION_WAIT_SECONDS = 30.0


async def deployment_for(
    session: AsyncSession, organization_id: uuid.UUID, deployment_id: uuid.UUID
) -> Deployment:
    row = await session.scalar(
        select(Deployment).where(
            Deployment.id == deployment_id,
            Deployment.organization_id == organization_id,
            Deployment.deleted_at.is_(None),
        )
    )
    if row is None:
        raise NotFound("deployment not found", resource_type="deployment")
    return row


async def acting_user(session: AsyncSession, principal: Principal) -> uuid.UUID | None:
    """The member behind the call: the session's user, or the user who created the API key."""
    if principal.user_id is not None:
        return principal.user_id
    if principal.api_key_id is None:
        return None
    creator: uuid.UUID | None = await session.scalar(
        select(ApiKey.created_by_user_id).where(ApiKey.id == principal.api_key_id)
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


async def approvals_of(session: AsyncSession, deployment: Deployment) -> ApprovalsOut | None:
    """Who decided on a protected deployment, how many approvals it still needs, and which
    members may still give one."""
    if not deployment.approval_protected:
        return None
    decisions = (
        await session.scalars(
            select(DeploymentApproval)
            .where(DeploymentApproval.deployment_id == deployment.id)
            .order_by(DeploymentApproval.decided_at, DeploymentApproval.id)
        )
    ).all()
    roles = list(deployment.approver_roles or APPROVER_ROLES)
    required = max(1, deployment.required_approvals)
    approved = len({d.user_id for d in decisions if d.approved})
    open_ = deployment.status == "awaiting_approval"
    eligible: list[uuid.UUID] = []
    if open_ and deployment.organization_id is not None:
        trigger = await triggering_person(session, deployment)
        decided = {d.user_id for d in decisions}
        members = await session.scalars(
            select(OrganizationMember.user_id)
            .where(
                OrganizationMember.organization_id == deployment.organization_id,
                OrganizationMember.role.in_(roles),
            )
            .order_by(OrganizationMember.user_id)
        )
        eligible = [m for m in members if m != trigger and m not in decided]
    return ApprovalsOut(
        required=required,
        approved=approved,
        missing=max(0, required - approved) if open_ else 0,
        approver_roles=roles,
        decisions=[ApprovalOut.model_validate(d, from_attributes=True) for d in decisions],
        eligible_user_ids=eligible,
    )


async def source_from_run(
    session: AsyncSession, settings: Settings, project: Project, run_id: uuid.UUID
) -> DeploymentSource:
    run = await session.scalar(
        select(PipelineRun).where(PipelineRun.id == run_id, PipelineRun.project_id == project.id)
    )
    if run is None:
        raise NotFound("pipeline run not found", resource_type="pipeline_run")
    if run.status not in ("succeeded", "success", "completed"):
        raise Conflict(
            f"pipeline run {run.run_number} is {run.status}; only a successful run can be deployed",
            run_status=run.status,
        )
    return await source_for_run(session, settings, project, run)


async def run_for_commit(
    session: AsyncSession, project: Project, commit_sha: str, branch: str | None
) -> uuid.UUID:
    """The newest successful run of a commit (full SHA or a prefix) in the project.

    This is what an external CI job deploys with `{"commit_sha": ..., "branch": ...}`: the
    source Forgeline built and tested for that commit, never an unbuilt checkout.
    """
    query = select(PipelineRun.id).where(
        PipelineRun.project_id == project.id,
        PipelineRun.status == "success",
        PipelineRun.commit_sha.startswith(commit_sha.lower(), autoescape=True),
    )
    if branch is not None:
        query = query.where(PipelineRun.branch == branch)
    run_id = await session.scalar(
        query.order_by(PipelineRun.finished_at.desc().nulls_last(), PipelineRun.id.desc()).limit(1)
    )
    if run_id is None:
        on_branch = f" on branch {branch}" if branch else ""
        raise Conflict(
            f"no successful pipeline run of commit {commit_sha}{on_branch} in this project; "
            "run the pipeline for that commit first",
            commit_sha=commit_sha,
        )
    return run_id


async def start_workflow(
    temporal: Client, inp: DeploymentInput, *, task_queue: str = DEPLOYMENTS_TASK_QUEUE
) -> None:
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


async def decide(
    temporal: Client, deployment: Deployment, decision: ApprovalDecision
) -> ApprovalOutcome:
    """Send the approve/reject Update; the workflow's validator enforces who may decide."""
    if deployment.status != "awaiting_approval":
        raise Conflict(f"deployment is {deployment.status}, not awaiting approval")
    handle = temporal.get_workflow_handle(deployment.workflow_id or "")
    try:
        # One update ID per person: a repeated (or concurrent) decision by the same person is
        # the same update, answered once and counted once; so a request that gave up waiting
        # can be sent again safely.
        async with asyncio.timeout(DECISION_WAIT_SECONDS):
            outcome: ApprovalOutcome = await handle.execute_update(
                DeploymentWorkflow.decide,
                decision,
                id=f"decision-{decision.approver_user_id}",
            )
    except (TimeoutError, RPCTimeoutOrCancelledError) as exc:
        # The SDK turns the timeout's cancellation into its own error.
        raise ServiceUnavailable(
            "the decision is not recorded yet (the deployment's worker is busy or down); "
            "send the same request again"
        ) from exc
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        if "cannot approve" in message or "triggered" in message:
            from forgeline.errors import Forbidden

            raise Forbidden(message) from exc
        raise Conflict(message) from exc
    except RPCError as exc:
        raise Conflict(f"deployment workflow is not running: {exc.message}") from exc
    return outcome


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


def artifact_source(deployment: Deployment) -> DeploymentSource:
    """The exact artifact a deployment released (rollback and promotion reuse it)."""
    if deployment.provider == "docker" and not deployment.image_ref:
        raise Conflict("that deployment has no built image to reuse")
    if deployment.provider in ("static", "aws") and not deployment.artifact_key:
        raise Conflict("that deployment has no published files to reuse")
    return DeploymentSource(
        version=deployment.version,
        commit_sha=deployment.commit_sha,
        image=deployment.image_ref if deployment.provider == "docker" else None,
        static_prefix=deployment.artifact_key if deployment.provider != "docker" else None,
    )
