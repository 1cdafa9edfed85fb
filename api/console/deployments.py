"""Console page of a project's environments and deployments: what is live where, at which URL,
and approve / reject (with a reason) for the members allowed to decide."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.audit import origin_of
from api.console.auth import check_csrf, console_user
from api.console.pages import error_page, form_fields, page, parse_id, require_scope
from api.deps import SessionDep, TemporalDep
from core.accounts.scopes import DEPLOYMENTS_TRIGGER, ENVIRONMENTS_READ
from core.audit.service import write_audit
from core.deployments import approvals
from core.deployments import repository as deployments
from core.deployments.approvals import DecisionNotRecorded
from core.projects import repository as projects
from db.models.deployments import Deployment
from forgeline.errors import DomainError, NotFound, ValidationFailed
from forgeline.statuses.deployments import DeploymentStatus
from workflows.deployment_models import unprintable

router = APIRouter(include_in_schema=False)

_RECENT = 50
_MAX_REASON = 2000


@router.get("/projects/{project_id}/deployments")
async def deployments_page(request: Request, project_id: str, session: SessionDep) -> Response:
    user = await console_user(request, session)
    org = user.principal.organization_id
    try:
        require_scope(user, ENVIRONMENTS_READ)
        project = await projects.get_project(session, org, parse_id(project_id))
        if project is None:
            raise NotFound("project not found")
        environments = list(
            await projects.list_environments(
                session, org, project.id, env_type=None, cursor=None, limit=100
            )
        )[:100]
        stmt = deployments.project_deployments(project.id).order_by(
            Deployment.created_at.desc(), Deployment.id.desc()
        )
        recent = list((await session.scalars(stmt.limit(_RECENT))).all())
    except DomainError as exc:
        return error_page(request, user, exc)
    live: dict[uuid.UUID, Deployment] = {}
    for row in recent:
        if row.status == DeploymentStatus.ACTIVE and row.environment_id not in live:
            live[row.environment_id] = row
    names: dict[uuid.UUID, str] = {env["id"]: env["name"] for env in environments}
    context: dict[str, Any] = {
        "user": user,
        "project": project,
        "environments": environments,
        "live": live,
        "deployments": recent,
        "names": names,
        "can_decide": user.principal.has(DEPLOYMENTS_TRIGGER) and user.principal.user_id,
        "awaiting": DeploymentStatus.AWAITING_APPROVAL.value,
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
    user = await console_user(request, session)
    form = await form_fields(request)
    check_csrf(user, form.get("csrf", ""))
    principal = user.principal
    try:
        if decision not in ("approve", "reject"):
            raise NotFound("not found")
        require_scope(user, DEPLOYMENTS_TRIGGER)
        reason = form.get("reason", "").strip()
        if not reason or len(reason) > _MAX_REASON or unprintable(reason):
            raise ValidationFailed(f"A reason of 1 to {_MAX_REASON} printable characters is needed")
        row = await deployments.deployment_for(
            session, principal.organization_id, parse_id(deployment_id)
        )
        member = await deployments.person_behind(session, principal.user_id, principal.api_key_id)
        approved = decision == "approve"
        outcome = await approvals.decide(
            session,
            temporal,
            row,
            member=member,
            role=principal.role,
            approved=approved,
            reason=reason,
        )
    except DecisionNotRecorded as exc:
        return page(request, "error.html", {"user": user, "message": exc.detail}, 503)
    except DomainError as exc:
        return error_page(request, user, exc)
    await write_audit(
        session,
        principal,
        origin_of(request),
        "deployment.approve" if approved else "deployment.reject",
        "deployment",
        row.id,
        old={"status": DeploymentStatus.AWAITING_APPROVAL},
        new={"status": outcome.status, "reason": reason},
    )
    return RedirectResponse(f"/projects/{row.project_id}/deployments", status_code=303)
