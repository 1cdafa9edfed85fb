"""Console pages of projects: create one and connect its repository, and its settings (name,
description, repository) for the members allowed to change them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.audit import origin_of
from api.console.auth import ConsoleUser, console_user
from api.console.pages import (
    error_page,
    page,
    page_user,
    parse_id,
    posted_form,
    require_project,
)
from api.deps import SessionDep, SettingsDep
from core.accounts.scopes import PROJECTS_READ, PROJECTS_WRITE
from core.projects import repositories
from core.projects import repository as projects
from core.projects import service as project_service
from core.projects.models import ProjectCreate, ProjectUpdate, RepositoryPut
from db.models.projects import PROJECT_TYPES
from forgeline.errors import DomainError, ValidationFailed

router = APIRouter(include_in_schema=False)
PROVIDERS = ("github", "gitlab", "bitbucket", "git", "local")


def invalid(exc: ValidationError) -> ValidationFailed:
    """The first problem of a form, in words (pydantic's message, without its input echo)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return ValidationFailed(f"{where}: {first.get('msg', 'invalid value')}")


def _repository_body(form: dict[str, str]) -> RepositoryPut | None:
    url = form.get("repository_url", "").strip()
    if not url:
        return None
    return RepositoryPut.model_validate(
        {
            "provider": form.get("provider", "git"),
            "url": url,
            "default_branch": form.get("default_branch", "").strip() or "main",
        }
    )


def _new_form(user: ConsoleUser, form: dict[str, str], error: str | None) -> dict[str, Any]:
    return {
        "user": user,
        "form": form,
        "error": error,
        "types": PROJECT_TYPES,
        "providers": PROVIDERS,
    }


@router.get("/projects/new")
async def new_project(request: Request, session: SessionDep) -> Response:
    user = await console_user(request, session)
    return page(request, "project_new.html", _new_form(user, {}, None))


@router.post("/projects")
async def create_project(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    user, form = await posted_form(request, session, PROJECTS_WRITE)
    try:
        try:
            body = ProjectCreate.model_validate(
                {"name": form.get("name", ""), "project_type": form.get("project_type", "")}
            )
            repo = _repository_body(form)
        except ValidationError as exc:
            raise invalid(exc) from None
        origin = origin_of(request)
        project = await project_service.create_project(
            session, user.principal, origin, settings, body
        )
        if repo is not None:
            await repositories.put_repository(
                session, user.principal, origin, settings, project.id, repo
            )
    except DomainError as exc:
        await session.rollback()  # no project without the repository it was asked with
        status = exc.status_code if exc.status_code in (403, 409, 422, 429) else 400
        return page(request, "project_new.html", _new_form(user, form, exc.detail), status)
    return RedirectResponse(f"/projects/{project.id}", status_code=303)


@router.get("/projects/{project_id}/settings")
async def settings_page(request: Request, project_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, PROJECTS_READ)
    try:
        project = await require_project(session, user, project_id)
        repo = await projects.get_repository(session, project.id)
    except DomainError as exc:
        return error_page(request, user, exc)
    context = {
        "user": user,
        "project": project,
        "repo": repo,
        "providers": PROVIDERS,
        "can_write": user.principal.has(PROJECTS_WRITE),
    }
    return page(request, "project_settings.html", context)


@router.post("/projects/{project_id}/settings")
async def save_settings(
    request: Request, project_id: str, session: SessionDep, settings: SettingsDep
) -> Response:
    user, form = await posted_form(request, session, PROJECTS_WRITE)
    try:
        try:
            body = ProjectUpdate(
                name=form.get("name", "").strip() or None,
                description=form.get("description", "").strip() or None,
            )
        except ValidationError as exc:
            raise invalid(exc) from None
        project = await project_service.update_project(
            session, user.principal, origin_of(request), settings, parse_id(project_id), body
        )
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/projects/{project.id}/settings", status_code=303)


@router.post("/projects/{project_id}/repository")
async def connect_repository(
    request: Request, project_id: str, session: SessionDep, settings: SettingsDep
) -> Response:
    user, form = await posted_form(request, session, PROJECTS_WRITE)
    try:
        try:
            body = _repository_body(form)
        except ValidationError as exc:
            raise invalid(exc) from None
        if body is None:
            raise ValidationFailed("A repository URL is needed")
        repo, _created = await repositories.put_repository(
            session, user.principal, origin_of(request), settings, parse_id(project_id), body
        )
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/projects/{repo.project_id}/settings", status_code=303)
