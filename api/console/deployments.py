"""Console page of a project's environments and deployments: what is live where, at which URL,
the history; approve / reject with a reason for the members allowed to decide (the others are
told why not), roll back, promote to another environment."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.audit import origin_of
from api.console.auth import ConsoleUser
from api.console.pages import (
    error_page,
    page,
    page_user,
    parse_id,
    posted_form,
    require_project,
    require_scope,
)
from api.deps import SessionDep, TemporalDep
from core.accounts.scopes import DEPLOYMENTS_TRIGGER, ENVIRONMENTS_READ
from core.audit.service import write_audit
from core.deployments import approvals, service
from core.deployments import repository as deployments
from core.deployments.approvals import DecisionNotRecorded
from core.deployments.decision_rights import why_not_decide
from core.projects import repository as projects
from db.models.deployments import Deployment
from forgeline.errors import DomainError, NotFound, ValidationFailed
from forgeline.statuses.deployments import HEALTHY_STATUSES, DeploymentStatus
from workflows.deployment_models import unprintable

router = APIRouter(include_in_schema=False)

_RECENT = 50
_FOLLOWED = frozenset(
    {
        DeploymentStatus.AWAITING_APPROVAL,
        DeploymentStatus.PENDING,
        DeploymentStatus.QUEUED,
        DeploymentStatus.BUILDING,
        DeploymentStatus.DEPLOYING,
        DeploymentStatus.VERIFYING,
    }
)
_MAX_REASON = 2000


def _requester(user: ConsoleUser) -> service.Requester:
    principal = user.principal
    return service.Requester(principal.organization_id, principal.user_id, principal.api_key_id)


@router.get("/projects/{project_id}/deployments")
async def deployments_page(request: Request, project_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, ENVIRONMENTS_READ)
    principal = user.principal
    org = principal.organization_id
    try:
        project = await require_project(session, user, project_id)
        environments = list(
            await projects.list_environments(
                session, org, project.id, env_type=None, cursor=None, limit=100
            )
        )[:100]
        stmt = deployments.project_deployments(project.id).order_by(
            Deployment.created_at.desc(), Deployment.id.desc()
        )
        recent = list((await session.scalars(stmt.limit(_RECENT))).all())
        may_deploy = principal.has(DEPLOYMENTS_TRIGGER)
        why_not: dict[uuid.UUID, str | None] = {}
        for row in recent:
            if row.status == DeploymentStatus.AWAITING_APPROVAL:
                why_not[row.id] = await why_not_decide(
                    session,
                    row,
                    member=principal.user_id,
                    role=principal.role,
                    may_deploy=may_deploy,
                )
    except DomainError as exc:
        return error_page(request, user, exc)
    live: dict[uuid.UUID, Deployment] = {}
    for row in recent:
        if row.status == DeploymentStatus.ACTIVE and row.environment_id not in live:
            live[row.environment_id] = row
    context: dict[str, Any] = {
        "user": user,
        "project": project,
        "environments": environments,
        "live": live,
        "deployments": recent,
        "names": {env["id"]: env["name"] for env in environments},
        "providers": {env["id"]: env["provider"] for env in environments},
        "may_deploy": may_deploy,
        "why_not": why_not,
        "healthy": tuple(HEALTHY_STATUSES),
        "awaiting": DeploymentStatus.AWAITING_APPROVAL.value,
        # Follow deployments in progress or waiting for a decision (a reason being typed is
        # kept across refreshes: hx-preserve).
        "poll": any(r.status in _FOLLOWED for r in recent),
    }
    return page(request, "deployments.html", context)


@router.post("/deployments/{deployment_id}/{decision}")
async def decide(
    request: Request,
    deployment_id: str,
    decision: str,
    session: SessionDep,
    temporal: TemporalDep,
) -> Response:
    """approve / reject (with a reason), rollback, promote (to a target environment)."""
    user, form = await posted_form(request, session)
    if decision in ("rollback", "promote"):
        return await _release(request, user, form, deployment_id, decision, session, temporal)
    try:
        if decision not in ("approve", "reject"):
            raise NotFound("not found")
        require_scope(user, DEPLOYMENTS_TRIGGER)
        reason = form.get("reason", "").strip()
        if not reason or len(reason) > _MAX_REASON or unprintable(reason):
            raise ValidationFailed(f"A reason of 1 to {_MAX_REASON} printable characters is needed")
        row, _ = await approvals.decide_as(
            session,
            temporal,
            user.principal,
            origin_of(request),
            parse_id(deployment_id),
            approved=decision == "approve",
            reason=reason,
        )
    except DecisionNotRecorded as exc:
        return page(request, "error.html", {"user": user, "message": exc.detail}, 503)
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/projects/{row.project_id}/deployments", status_code=303)


async def _release(
    request: Request,
    user: ConsoleUser,
    form: dict[str, str],
    deployment_id: str,
    action: str,
    session: SessionDep,
    temporal: TemporalDep,
) -> Response:
    """A rollback to the last healthy version, or a promotion: the new deployment's row is
    committed, then its workflow started (as the API does)."""
    try:
        require_scope(user, DEPLOYMENTS_TRIGGER)
        source_id = parse_id(deployment_id)
        if action == "rollback":
            target, created, inp = await service.request_rollback(
                session, _requester(user), source_id
            )
            new = {"redeploys": str(target.id), "new_deployment_id": str(created.id)}
        else:
            environment_id = parse_id(form.get("environment", "")[:40])
            created, inp = await service.request_promotion(
                session, _requester(user), source_id, environment_id
            )
            new = {"from": str(source_id), "environment_id": inp.environment_id}
        await write_audit(
            session,
            user.principal,
            origin_of(request),
            f"deployment.{action}",
            "deployment",
            source_id if action == "rollback" else created.id,
            new=new,
        )
        await session.commit()
        await service.start_workflow(temporal, inp)
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/projects/{created.project_id}/deployments", status_code=303)
