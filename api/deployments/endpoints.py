"""/v1 routes for deployments: trigger, list, inspect, soft delete, approve/reject, rollback,
promote, preview teardown, and the static site host (`/v1/sites/{deployment_id}/...`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy import select

from activities.deployments.providers import require_available
from activities.deployments.providers.static import content_type, resolve_site_key
from api.audit import write_audit
from api.deployments import service
from api.deployments.schemas import (
    ContainerOut,
    DecisionBody,
    DecisionOut,
    DeploymentCreate,
    DeploymentDetail,
    DeploymentOut,
    HealthCheckOut,
    PromoteBody,
    RuntimeLogOut,
)
from api.deps import (
    DEPLOYMENTS_TRIGGER,
    ENVIRONMENTS_READ,
    Principal,
    SessionDep,
    SettingsDep,
    TemporalDep,
    require_scope,
)
from api.pagination import CursorParam, LimitParam, Page, build_page, paginate
from core.billing.limits import enforce_limit
from db.models.deployments import (
    Deployment,
    DeploymentContainer,
    DeploymentHealthCheck,
    DeploymentRuntimeLog,
)
from db.models.projects import Project
from forgeline.errors import Conflict, Forbidden, NotFound, ValidationFailed
from forgeline.local_paths import confine_local_path
from infra.storage import ObjectNotFound, create_object_store
from workflows.deployment_models import (
    TERMINAL_STATUSES,
    ApprovalDecision,
    DeploymentInput,
    DeploymentRuntimeConfig,
    DeploymentSource,
)
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id

router = APIRouter(tags=["deployments"])

Reader = Annotated[Principal, Depends(require_scope(ENVIRONMENTS_READ))]
Trigger = Annotated[Principal, Depends(require_scope(DEPLOYMENTS_TRIGGER))]
_PROBLEMS: dict[int | str, dict[str, str]] = {
    404: {"description": "Not found (or another organization's)"},
    409: {"description": "Conflict with the deployment's state"},
    422: {"description": "Invalid input or provider not available"},
}


def deployment_out(row: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(row, from_attributes=True)


async def _limit(session: SessionDep, organization_id: uuid.UUID) -> None:
    await enforce_limit(session, organization_id, "deployments_per_month")


async def _commit_and_start(
    session: SessionDep, temporal: TemporalDep, inp: DeploymentInput
) -> None:
    # The intent row is committed before the workflow starts (the workflow reads it back).
    await session.commit()
    await service.start_workflow(temporal, inp)


@router.post(
    "/environments/{environment_id}/deployments",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def create_deployment(
    environment_id: uuid.UUID,
    body: DeploymentCreate,
    session: SessionDep,
    principal: Trigger,
    temporal: TemporalDep,
    settings: SettingsDep,
    request: Request,
) -> DeploymentOut:
    environment, project = await service.environment_for(
        session, principal.organization_id, environment_id
    )
    require_available(environment.provider)
    pipeline_run_id = body.pipeline_run_id
    if pipeline_run_id is None and body.commit_sha and not body.source_dir:
        pipeline_run_id = await service.run_for_commit(
            session, project, body.commit_sha, body.branch
        )
    if pipeline_run_id is not None:
        source = await service.source_from_run(session, settings, project, pipeline_run_id)
    else:
        if body.source_dir and not settings.allow_local_repositories:
            raise ValidationFailed(
                "source_dir is only accepted when local repositories are allowed"
            )
        if not body.source_dir:
            raise ValidationFailed(
                "deploying a version needs its source: give pipeline_run_id or the commit_sha of "
                "a successful run (or source_dir in dev)"
            )
        # Only inside this organization's local root: never another tenant's or the host's files.
        source_dir = confine_local_path(
            body.source_dir, settings, principal.organization_id, field="source_dir"
        )
        source = DeploymentSource(
            version=(body.version or body.commit_sha or "")[:100],
            commit_sha=body.commit_sha,
            context_dir=str(source_dir),
            output_dir=body.output_dir,
            dockerfile=body.dockerfile,
            framework=project.framework,
        )
    await _limit(session, principal.organization_id)
    deployment, inp = await service.create_deployment(
        session,
        environment,
        project,
        source,
        triggered_by_user_id=await service.acting_user(session, principal),
        triggered_by_api_key_id=principal.api_key_id,
        pipeline_run_id=pipeline_run_id,
    )
    await write_audit(
        session,
        principal,
        request,
        "deployment.create",
        "deployment",
        deployment.id,
        new={"environment_id": str(environment.id), "version": deployment.version},
    )
    await _commit_and_start(session, temporal, inp)
    return deployment_out(deployment)


@router.get("/environments/{environment_id}/deployments", responses=_PROBLEMS)
async def list_environment_deployments(
    environment_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> Page[DeploymentOut]:
    await service.environment_for(session, principal.organization_id, environment_id)
    stmt = select(Deployment).where(
        Deployment.environment_id == environment_id, Deployment.deleted_at.is_(None)
    )
    rows = (
        await session.scalars(
            paginate(stmt, Deployment.created_at, Deployment.id, cursor=cursor, limit=limit)
        )
    ).all()
    return build_page(rows, limit=limit, key=lambda r: (r.created_at, r.id), to_item=deployment_out)


@router.get("/projects/{project_id}/deployments", responses=_PROBLEMS)
async def list_project_deployments(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> Page[DeploymentOut]:
    owned = await session.scalar(
        select(Project.id).where(
            Project.id == project_id, Project.organization_id == principal.organization_id
        )
    )
    if owned is None:
        raise NotFound("project not found", resource_type="project")
    stmt = select(Deployment).where(
        Deployment.project_id == project_id, Deployment.deleted_at.is_(None)
    )
    rows = (
        await session.scalars(
            paginate(stmt, Deployment.created_at, Deployment.id, cursor=cursor, limit=limit)
        )
    ).all()
    return build_page(rows, limit=limit, key=lambda r: (r.created_at, r.id), to_item=deployment_out)


@router.get("/deployments/{deployment_id}", responses=_PROBLEMS)
async def get_deployment(
    deployment_id: uuid.UUID, session: SessionDep, principal: Reader, log_limit: int = 200
) -> DeploymentDetail:
    row = await service.deployment_for(session, principal.organization_id, deployment_id)
    checks = (
        await session.scalars(
            select(DeploymentHealthCheck)
            .where(DeploymentHealthCheck.deployment_id == row.id)
            .order_by(DeploymentHealthCheck.check_number.desc())
            .limit(100)
        )
    ).all()
    containers = (
        await session.scalars(
            select(DeploymentContainer).where(DeploymentContainer.deployment_id == row.id)
        )
    ).all()
    logs = (
        await session.scalars(
            select(DeploymentRuntimeLog)
            .where(DeploymentRuntimeLog.deployment_id == row.id)
            .order_by(DeploymentRuntimeLog.seq.desc())
            .limit(max(1, min(log_limit, 1000)))
        )
    ).all()
    return DeploymentDetail(
        **deployment_out(row).model_dump(),
        approvals=await service.approvals_of(session, row),
        health_checks=[HealthCheckOut.model_validate(c, from_attributes=True) for c in checks],
        containers=[ContainerOut.model_validate(c, from_attributes=True) for c in containers],
        runtime_logs=[
            RuntimeLogOut.model_validate(x, from_attributes=True) for x in reversed(logs)
        ],
    )


@router.delete(
    "/deployments/{deployment_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_PROBLEMS
)
async def delete_deployment(
    deployment_id: uuid.UUID, session: SessionDep, principal: Trigger, request: Request
) -> None:
    row = await service.deployment_for(session, principal.organization_id, deployment_id)
    if row.status == "active":
        raise Conflict("the active deployment cannot be deleted; deploy or roll back first")
    if row.status not in TERMINAL_STATUSES:
        raise Conflict(f"deployment is {row.status}; wait for it to finish")
    row.deleted_at = datetime.now(UTC)
    await write_audit(session, principal, request, "deployment.delete", "deployment", row.id)


async def _decide(
    deployment_id: uuid.UUID,
    body: DecisionBody,
    approved: bool,
    session: SessionDep,
    principal: Principal,
    temporal: TemporalDep,
    request: Request,
) -> DecisionOut:
    row = await service.deployment_for(session, principal.organization_id, deployment_id)
    member = await service.acting_user(session, principal)
    if member is None:
        raise Forbidden("approvals need a member, not an organization-wide key")
    roles = list(row.approver_roles or service.APPROVER_ROLES)
    if principal.role not in roles:
        raise Forbidden(f"role {principal.role!r} cannot decide deployments ({' or '.join(roles)})")
    # The person, not the credential: a deployment requested with someone's API key is theirs.
    if await service.triggering_person(session, row) == member:
        raise Forbidden("the member who triggered a deployment cannot approve or reject it")
    outcome = await service.decide(
        temporal,
        row,
        ApprovalDecision(
            approver_user_id=str(member),
            approver_role=principal.role,
            approved=approved,
            reason=body.reason,
        ),
    )
    await write_audit(
        session,
        principal,
        request,
        "deployment.approve" if approved else "deployment.reject",
        "deployment",
        row.id,
        old={"status": "awaiting_approval"},
        new={"status": outcome.status, "reason": body.reason},
    )
    return DecisionOut(
        deployment_id=row.id,
        approved=approved,
        status=outcome.status,
        approved_by=[uuid.UUID(u) for u in outcome.approved_by],
        required_approvals=outcome.required_approvals,
    )


@router.post(
    "/deployments/{deployment_id}/approve",
    responses={**_PROBLEMS, 403: {"description": "Not allowed to approve"}},
)
async def approve_deployment(
    deployment_id: uuid.UUID,
    body: DecisionBody,
    session: SessionDep,
    principal: Trigger,
    temporal: TemporalDep,
    request: Request,
) -> DecisionOut:
    return await _decide(deployment_id, body, True, session, principal, temporal, request)


@router.post(
    "/deployments/{deployment_id}/reject",
    responses={**_PROBLEMS, 403: {"description": "Not allowed to reject"}},
)
async def reject_deployment(
    deployment_id: uuid.UUID,
    body: DecisionBody,
    session: SessionDep,
    principal: Trigger,
    temporal: TemporalDep,
    request: Request,
) -> DecisionOut:
    return await _decide(deployment_id, body, False, session, principal, temporal, request)


@router.post(
    "/deployments/{deployment_id}/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def rollback_deployment(
    deployment_id: uuid.UUID,
    session: SessionDep,
    principal: Trigger,
    temporal: TemporalDep,
    request: Request,
) -> DeploymentOut:
    """Redeploy the last healthy version before this one: same image and same config."""
    row = await service.deployment_for(session, principal.organization_id, deployment_id)
    target = await service.last_healthy_before(session, row)
    if target is None:
        raise Conflict("no earlier healthy deployment to roll back to")
    environment, project = await service.environment_for(
        session, principal.organization_id, row.environment_id
    )
    deployment, inp = await service.create_deployment(
        session,
        environment,
        project,
        service.artifact_source(target),
        triggered_by_user_id=await service.acting_user(session, principal),
        triggered_by_api_key_id=principal.api_key_id,
        config=DeploymentRuntimeConfig.model_validate(target.config_snapshot or {}),
        rollback_of_id=row.id,
    )
    await write_audit(
        session,
        principal,
        request,
        "deployment.rollback",
        "deployment",
        row.id,
        new={"redeploys": str(target.id), "new_deployment_id": str(deployment.id)},
    )
    await _commit_and_start(session, temporal, inp)
    return deployment_out(deployment)


@router.post(
    "/deployments/{deployment_id}/promote",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def promote_deployment(
    deployment_id: uuid.UUID,
    body: PromoteBody,
    session: SessionDep,
    principal: Trigger,
    temporal: TemporalDep,
    request: Request,
) -> DeploymentOut:
    """Release the same artifact to another environment of the project (staging → production)."""
    row = await service.deployment_for(session, principal.organization_id, deployment_id)
    if row.status not in ("active", "superseded"):
        raise Conflict(f"only a healthy deployment can be promoted (this one is {row.status})")
    environment, project = await service.environment_for(
        session, principal.organization_id, body.target_environment_id
    )
    if environment.project_id != row.project_id:
        raise ValidationFailed("the target environment belongs to another project")
    if environment.id == row.environment_id:
        raise ValidationFailed("the target environment is the deployment's own environment")
    if environment.provider != row.provider:
        raise ValidationFailed(
            f"cannot promote a {row.provider} artifact to a {environment.provider} environment"
        )
    deployment, inp = await service.create_deployment(
        session,
        environment,
        project,
        service.artifact_source(row),
        triggered_by_user_id=await service.acting_user(session, principal),
        triggered_by_api_key_id=principal.api_key_id,
        pipeline_run_id=row.pipeline_run_id,
        promoted_from_id=row.id,
    )
    await write_audit(
        session,
        principal,
        request,
        "deployment.promote",
        "deployment",
        deployment.id,
        new={"from": str(row.id), "environment_id": str(environment.id)},
    )
    await _commit_and_start(session, temporal, inp)
    return deployment_out(deployment)


@router.post(
    "/environments/{environment_id}/teardown",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def teardown_preview(
    environment_id: uuid.UUID,
    session: SessionDep,
    principal: Trigger,
    temporal: TemporalDep,
    request: Request,
) -> dict[str, str]:
    environment, _ = await service.environment_for(
        session, principal.organization_id, environment_id
    )
    if environment.env_type != "preview":
        raise ValidationFailed("only preview environments are torn down")
    await write_audit(
        session, principal, request, "environment.teardown", "environment", environment.id
    )
    try:
        await temporal.get_workflow_handle(preview_workflow_id(str(environment.id))).signal(
            PreviewEnvironmentWorkflow.teardown, "requested"
        )
    except Exception as exc:
        raise Conflict("this preview has no running lifetime workflow") from exc
    return {"environment_id": str(environment.id), "status": "tearing_down"}


# No allow-same-origin: the document runs in an opaque origin, never the API's.
SITE_SANDBOX_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-forms allow-popups allow-downloads; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/sites/{deployment_id}/{path:path}", tags=["sites"], include_in_schema=True)
async def serve_site(
    deployment_id: uuid.UUID, path: str, session: SessionDep, settings: SettingsDep
) -> Response:
    """A `static` deployment's published files (public, like a website), kept for links made
    before sites got their own host names. Served sandboxed (an opaque origin: the page's
    scripts cannot act as the API's origin or read its storage); the deployment's URL on its
    own host is the canonical one."""
    row = await session.scalar(
        select(Deployment).where(
            Deployment.id == deployment_id,
            Deployment.provider == "static",
            Deployment.deleted_at.is_(None),
        )
    )
    if row is None or not row.artifact_key:
        raise NotFound("site not found", resource_type="site")
    key = resolve_site_key(row.artifact_key, path)
    if key is None:
        raise NotFound("file not found", resource_type="site_file")
    store = create_object_store(settings)
    try:
        body = await asyncio.to_thread(store.get_bytes, key)
    except ObjectNotFound as exc:
        raise NotFound("file not found", resource_type="site_file") from exc
    return Response(content=body, media_type=content_type(key), headers=SITE_SANDBOX_HEADERS)
