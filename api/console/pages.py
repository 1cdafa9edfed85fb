"""Shared pieces of the console's pages: templates, the page CSP, form parsing, ID parsing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.ext.asyncio import AsyncSession

from api.console.ansi import ansi_to_html
from api.console.auth import ConsoleUser, CsrfRejected, check_csrf, console_user
from core.projects import repository as projects
from db.models.projects import Project
from forgeline.errors import DomainError, Forbidden, NotFound

HERE = Path(__file__).parent
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
)
templates.env.filters["ansi"] = ansi_to_html

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_MAX_FORM_BYTES = 16_384


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response: HTMLResponse = templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    response.headers["Content-Security-Policy"] = CONSOLE_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, user: ConsoleUser | None, exc: DomainError) -> HTMLResponse:
    status = exc.status_code if exc.status_code in (403, 404, 409, 422, 429) else 400
    return page(request, "error.html", {"user": user, "message": exc.detail}, status)


def unavailable_page(request: Request, user: ConsoleUser, message: str) -> HTMLResponse:
    """The page of an action that needs Temporal while it is not reachable."""
    return page(request, "error.html", {"user": user, "message": message}, 503)


def parse_id(value: str) -> uuid.UUID:
    """Hostile path IDs are a plain 404, never a validation echo."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("not found") from None


async def form_fields(request: Request, limit: int = _MAX_FORM_BYTES) -> dict[str, str]:
    body = await request.body()
    if len(body) > limit:
        raise CsrfRejected()
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items() if values}


def require_scope(user: ConsoleUser, scope: str) -> None:
    if not user.principal.has(scope):
        raise Forbidden(f"This needs the {scope!r} scope")


class PageRefused(Exception):
    """A signed-in user without the scope an action needs: the error page, shown to them."""

    def __init__(self, user: ConsoleUser, error: DomainError) -> None:
        super().__init__(error.detail)
        self.user = user
        self.error = error


async def posted_form(
    request: Request, session: AsyncSession, scope: str | None = None
) -> tuple[ConsoleUser, dict[str, str]]:
    """The signed-in user and the fields of a form they posted, its CSRF token checked and
    (PageRefused otherwise) `scope` held."""
    user = await console_user(request, session)
    form = await form_fields(request)
    check_csrf(user, form.get("csrf", ""))
    if scope is not None:
        _refuse_without(user, scope)
    return user, form


async def page_user(request: Request, session: AsyncSession, scope: str) -> ConsoleUser:
    """The signed-in user, holding `scope` (PageRefused otherwise)."""
    user = await console_user(request, session)
    _refuse_without(user, scope)
    return user


def _refuse_without(user: ConsoleUser, scope: str) -> None:
    try:
        require_scope(user, scope)
    except Forbidden as exc:
        raise PageRefused(user, exc) from None


async def require_project(session: AsyncSession, user: ConsoleUser, project_id: str) -> Project:
    """A project of the user's organization, after the scope check; any other ID is a 404."""
    org = user.principal.organization_id
    project = await projects.get_project(session, org, parse_id(project_id))
    if project is None:
        raise NotFound("project not found")
    return project
