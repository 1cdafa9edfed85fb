"""Console pages: sign in/out, organization switch, the project list and a project's overview;
and the wiring of every console router."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.audit import origin_of
from api.console.agent_tasks import router as agent_tasks_router
from api.console.auth import (
    CsrfRejected,
    SignInRequired,
    check_login_csrf,
    clear_session_cookie,
    console_user,
    login_csrf,
    set_login_csrf_cookie,
    set_session_cookie,
)
from api.console.billing import router as billing_router
from api.console.deployments import router as deployments_router
from api.console.members import router as members_router
from api.console.pages import (
    HERE,
    PageRefused,
    error_page,
    form_fields,
    page,
    page_user,
    posted_form,
    require_project,
)
from api.console.pipeline_versions import router as versions_router
from api.console.pipelines import router as pipelines_router
from api.console.projects import router as projects_router
from api.console.runs import router as runs_router
from api.deps import AccountContextDep, SessionDep
from core.accounts import oauth, sessions
from core.accounts.context import utcnow
from core.accounts.errors import TotpRequired
from core.accounts.repository import MemberRepository, SessionRepository, UserRepository
from core.accounts.scopes import (
    PIPELINES_READ,
    PIPELINES_WRITE,
    PROJECTS_READ,
    PROJECTS_WRITE,
)
from core.audit.service import write_audit
from core.pipelines import repository as pipelines
from core.projects import repository as projects
from core.runs import repository as runs
from forgeline.errors import DomainError

router = APIRouter(include_in_schema=False)


# --- sign in / out / switch -------------------------------------------------------------------


@router.get("/")
async def home(request: Request, session: SessionDep) -> Response:
    await console_user(request, session)
    return RedirectResponse("/projects", status_code=303)


@router.get("/login")
async def loginpage(request: Request) -> Response:
    token = login_csrf(request)
    forges = oauth.configured_providers(request.app.state.settings)
    context = {"user": None, "csrf": token, "error": None, "oauth_providers": forges}
    response = page(request, "login.html", context)
    set_login_csrf_cookie(request, response, token)
    return response


@router.post("/login")
async def login_submit(request: Request, session: SessionDep, ctx: AccountContextDep) -> Response:
    form = await form_fields(request)
    check_login_csrf(request, form.get("csrf", ""))
    email = form.get("email", "")[:320]
    totp_code = form.get("totp_code", "").strip()[:12] or None
    slug = form.get("organization", "").strip()[:100] or None
    try:
        _row, raw = await sessions.login(
            session,
            ctx,
            email=email,
            password=form.get("password", "")[:1024],
            totp_code=totp_code,
            organization_slug=slug,
        )
    except TotpRequired:
        context = {
            "user": None,
            "csrf": login_csrf(request),
            "error": None,
            "email": email,
            "need_totp": True,
        }
        return page(request, "login.html", context, 401)
    except DomainError as exc:
        context = {
            "user": None,
            "csrf": login_csrf(request),
            "error": exc.detail,
            "email": email,
            "need_totp": totp_code is not None,
        }
        return page(request, "login.html", context, exc.status_code)
    response = RedirectResponse("/projects", status_code=303)
    set_session_cookie(request, response, raw)
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, ctx: AccountContextDep) -> Response:
    user, _form = await posted_form(request, session)
    await sessions.logout(session, ctx, user.principal)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    return response


@router.post("/organization")
async def switch_organization(
    request: Request, session: SessionDep, ctx: AccountContextDep
) -> Response:
    """A new session in another organization the user belongs to; the old one is revoked."""
    user, form = await posted_form(request, session)
    principal = user.principal
    slug = form.get("organization", "").strip()[:100]
    if principal.user_id is None or principal.session_id is None:
        raise SignInRequired()
    organization_id = await MemberRepository(session).organization_by_slug_for_user(
        slug, principal.user_id
    )
    account = await UserRepository(session).get(principal.user_id)
    if organization_id is None or account is None:
        return page(
            request,
            "error.html",
            {"user": user, "message": "Not a member of that organization"},
            404,
        )
    current = await SessionRepository(session).get(principal.session_id)
    if current is None:
        raise SignInRequired()
    current.revoked_at = utcnow()
    row, raw = await sessions.new_session(
        session, ctx, account, organization_id, mfa_verified=account.totp_enabled
    )
    await write_audit(
        session,
        principal,
        origin_of(request),
        "session.switched_organization",
        "session",
        row.id,
        new={"organization_id": organization_id},
    )
    response = RedirectResponse("/projects", status_code=303)
    set_session_cookie(request, response, raw)
    return response


# --- projects, pipelines, runs ----------------------------------------------------------------


@router.get("/projects")
async def project_list(request: Request, session: SessionDep) -> Response:
    user = await page_user(request, session, PROJECTS_READ)
    try:
        rows = await projects.list_projects(
            session,
            user.principal.organization_id,
            status=None,
            project_type=None,
            framework=None,
            search=None,
            cursor=None,
            limit=100,
        )
    except DomainError as exc:
        return error_page(request, user, exc)
    context = {
        "user": user,
        "projects": rows[:100],
        "can_create": user.principal.has(PROJECTS_WRITE),
    }
    return page(request, "projects.html", context)


@router.get("/projects/{project_id}")
async def projectpage(request: Request, project_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, PROJECTS_READ)
    org = user.principal.organization_id
    try:
        project = await require_project(session, user, project_id)
        pipeline_rows = list(
            await pipelines.list_for_project(session, org, project.id, cursor=None, limit=50)
        )[:50]
        recent: dict[uuid.UUID, list[Any]] = {}
        if user.principal.has(PIPELINES_READ):
            for pipeline in pipeline_rows:
                found = await runs.list_runs(
                    session, org, pipeline.id, status=None, cursor=None, limit=10
                )
                recent[pipeline.id] = found[:10]
    except DomainError as exc:
        return error_page(request, user, exc)
    context = {
        "user": user,
        "project": project,
        "pipelines": pipeline_rows,
        "runs": recent,
        "can_generate": user.principal.has(PIPELINES_WRITE),
    }
    return page(request, "project.html", context)


# --- wiring -----------------------------------------------------------------------------------


def install_console(app: FastAPI) -> None:
    """The console's routes at /, its static files, and its sign-in and CSRF answers."""

    async def sign_in(request: Request, exc: Exception) -> Response:
        response = RedirectResponse("/login", status_code=303)
        if request.cookies.get("fl_console_session"):
            clear_session_cookie(request, response)
        return response

    async def csrf(request: Request, exc: Exception) -> Response:
        return page(
            request,
            "error.html",
            {"user": None, "message": "The form expired; reload the page and retry"},
            403,
        )

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageRefused)
        return error_page(request, exc.user, exc.error)

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(CsrfRejected, csrf)
    app.add_exception_handler(PageRefused, refused)
    app.include_router(projects_router)  # before /projects/{project_id}: /projects/new
    app.include_router(router)
    app.include_router(billing_router)
    app.include_router(members_router)
    app.include_router(deployments_router)
    app.include_router(runs_router)
    app.include_router(pipelines_router)
    app.include_router(versions_router)
    app.include_router(agent_tasks_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")
