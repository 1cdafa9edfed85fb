"""Console page of the organization's members and roles: who is in it, what each role may see
and do, and changing a member's role (for admins; the rules are core's)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.audit import origin_of
from api.console.pages import error_page, page, page_user, parse_id, posted_form
from api.deps import SessionDep
from core.accounts import members
from core.accounts.scopes import ADMIN, PROJECTS_READ, ROLE_SCOPES, ROLES
from forgeline.errors import DomainError, ValidationFailed

router = APIRouter(include_in_schema=False)
_LISTED = 200

# What a role's scopes let a member do in the console, in words.
CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("projects:read", "See projects, environments and settings"),
    ("projects:write", "Create projects, change settings, connect repositories"),
    ("pipelines:read", "See pipelines, runs and logs"),
    ("pipelines:write", "Run, cancel and re-run pipelines"),
    ("deployments:trigger", "Deploy, roll back, promote"),
    ("billing:read", "See the plan, usage and invoices"),
    ("admin", "Manage members and roles"),
)


@router.get("/members")
async def members_page(request: Request, session: SessionDep) -> Response:
    user = await page_user(request, session, PROJECTS_READ)
    try:
        rows = (await members.list_members(session, user.principal, cursor=None, limit=_LISTED))[
            :_LISTED
        ]
    except DomainError as exc:
        return error_page(request, user, exc)
    matrix = [
        (label, [scope in ROLE_SCOPES[role] for role in ROLES]) for scope, label in CAPABILITIES
    ]
    context: dict[str, Any] = {
        "user": user,
        "members": rows,
        "roles": [str(r) for r in ROLES],
        "matrix": matrix,
        "can_admin": user.principal.has(ADMIN),
    }
    return page(request, "members.html", context)


@router.post("/members/{member_id}/role")
async def change_role(request: Request, member_id: str, session: SessionDep) -> Response:
    user, form = await posted_form(request, session, ADMIN)
    try:
        role = form.get("role", "")
        if role not in ROLES:
            raise ValidationFailed("Unknown role")
        await members.change_member_role(
            session, origin_of(request), user.principal, parse_id(member_id), role
        )
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse("/members", status_code=303)
