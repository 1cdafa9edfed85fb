"""/v1 routes for deployments: trigger, list, inspect, soft delete, approve/reject, rollback,
promote and preview teardown; the rules live in core/deployments."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import origin_of
from api.deployments import sites
from api.deployments.schemas import (
    ApprovalOut,
    ApprovalsOut,
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
    DeploymentsTrigger,
    EnvironmentsReader,
    Principal,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from api.errors import ServiceUnavailable, problems
from api.pagination import Page, PageDep, PageRequest, build_page, paginate
from core.audit.service import write_audit
from core.deployments import approvals, repository, service
from core.deployments.approvals import ApprovalState, DecisionNotRecorded
from db.models.deployments import Deployment
from workflows.deployment_models import DeploymentInput

router = APIRouter(tags=["deployments"])
router.include_router(sites.router)

_PROBLEMS = problems(
    "Conflict with the deployment's state",
    not_found="Not found (or another organization's)",
    invalid="Invalid input or provider not available",
)


def deployment_out(row: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(row, from_attributes=True)


def approvals_out(state: ApprovalState | None) -> ApprovalsOut | None:
    if state is None:
        return None
    return ApprovalsOut(
        required=state.required,
        approved=state.approved,
        missing=state.missing,
        approver_roles=state.approver_roles,
        decisions=[ApprovalOut.model_validate(d, from_attributes=True) for d in state.decisions],
        eligible_user_ids=state.eligible_user_ids,
    )


def _requester(principal: Principal) -> service.Requester:
    return service.Requester(
        organization_id=principal.organization_id,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
    )


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
    principal: DeploymentsTrigger,
    temporal: TemporalDep,
    settings: SettingsDep,
    request: Request,
) -> DeploymentOut:
    deployment, inp = await service.request_version(
        session,
        settings,
        _requester(principal),
        environment_id,
        service.VersionRequest(
            pipeline_run_id=body.pipeline_run_id,
            version=body.version,
            commit_sha=body.commit_sha,
            branch=body.branch,
            source_dir=body.source_dir,
            output_dir=body.output_dir,
            dockerfile=body.dockerfile,
        ),
    )
    await write_audit(
        session,
        principal,
        origin_of(request),
        "deployment.create",
        "deployment",
        deployment.id,
        new={"environment_id": inp.environment_id, "version": deployment.version},
    )
    await _commit_and_start(session, temporal, inp)
    return deployment_out(deployment)


async def _deployment_page(
    session: AsyncSession, stmt: Select[Deployment], page: PageRequest
) -> Page[DeploymentOut]:
    """One page of deployments, newest first, keyed by (created_at, id)."""
    keyed = paginate(
        stmt, Deployment.created_at, Deployment.id, cursor=page.cursor, limit=page.limit
    )
    rows = (await session.scalars(keyed)).all()
    return build_page(rows, limit=page.limit, to_item=deployment_out)


@router.get("/environments/{environment_id}/deployments", responses=_PROBLEMS)
async def list_environment_deployments(
    environment_id: uuid.UUID,
    session: SessionDep,
    principal: EnvironmentsReader,
    page: PageDep,
) -> Page[DeploymentOut]:
    await repository.environment_for(session, principal.organization_id, environment_id)
    stmt = repository.environment_deployments(environment_id)
    return await _deployment_page(session, stmt, page)


@router.get("/projects/{project_id}/deployments", responses=_PROBLEMS)
async def list_project_deployments(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: EnvironmentsReader,
    page: PageDep,
) -> Page[DeploymentOut]:
    await repository.require_project(session, principal.organization_id, project_id)
    stmt = repository.project_deployments(project_id)
    return await _deployment_page(session, stmt, page)


@router.get("/deployments/{deployment_id}", responses=_PROBLEMS)
async def get_deployment(
    deployment_id: uuid.UUID,
    session: SessionDep,
    principal: EnvironmentsReader,
    log_limit: int = 200,
) -> DeploymentDetail:
    row = await repository.deployment_for(session, principal.organization_id, deployment_id)
    checks = await repository.health_checks(session, row.id)
    containers = await repository.containers(session, row.id)
    logs = await repository.latest_runtime_logs(session, row.id, max(1, min(log_limit, 1000)))
    return DeploymentDetail(
        **deployment_out(row).model_dump(),
        approvals=approvals_out(await approvals.approval_state(session, row)),
        health_checks=[HealthCheckOut.model_validate(c, from_attributes=True) for c in checks],
        containers=[ContainerOut.model_validate(c, from_attributes=True) for c in containers],
        runtime_logs=[RuntimeLogOut.model_validate(x, from_attributes=True) for x in logs],
    )


@router.delete(
    "/deployments/{deployment_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_PROBLEMS
)
async def delete_deployment(
    deployment_id: uuid.UUID, session: SessionDep, principal: DeploymentsTrigger, request: Request
) -> None:
    row = await service.delete_deployment(session, principal.organization_id, deployment_id)
    await write_audit(
        session, principal, origin_of(request), "deployment.delete", "deployment", row.id
    )


async def _decide(
    deployment_id: uuid.UUID,
    body: DecisionBody,
    approved: bool,
    session: SessionDep,
    principal: Principal,
    temporal: TemporalDep,
    request: Request,
) -> DecisionOut:
    try:
        row, outcome = await approvals.decide_as(
            session,
            temporal,
            principal,
            origin_of(request),
            deployment_id,
            approved=approved,
            reason=body.reason,
        )
    except DecisionNotRecorded as exc:
        raise ServiceUnavailable(exc.detail) from exc
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
    principal: DeploymentsTrigger,
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
    principal: DeploymentsTrigger,
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
    principal: DeploymentsTrigger,
    temporal: TemporalDep,
    request: Request,
) -> DeploymentOut:
    """Redeploy the last healthy version before this one: same image and same config."""
    target, deployment, inp = await service.request_rollback(
        session, _requester(principal), deployment_id
    )
    await write_audit(
        session,
        principal,
        origin_of(request),
        "deployment.rollback",
        "deployment",
        deployment_id,
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
    principal: DeploymentsTrigger,
    temporal: TemporalDep,
    request: Request,
) -> DeploymentOut:
    """Release the same artifact to another environment of the project (staging → production)."""
    deployment, inp = await service.request_promotion(
        session, _requester(principal), deployment_id, body.target_environment_id
    )
    await write_audit(
        session,
        principal,
        origin_of(request),
        "deployment.promote",
        "deployment",
        deployment.id,
        new={"from": str(deployment_id), "environment_id": inp.environment_id},
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
    principal: DeploymentsTrigger,
    temporal: TemporalDep,
    request: Request,
) -> dict[str, str]:
    environment = await service.preview_environment(
        session, principal.organization_id, environment_id
    )
    await write_audit(
        session,
        principal,
        origin_of(request),
        "environment.teardown",
        "environment",
        environment.id,
    )
    await service.tear_down_preview(temporal, environment.id)
    return {"environment_id": str(environment.id), "status": "tearing_down"}
