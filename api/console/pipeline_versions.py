"""Console pages of a pipeline's versions (who changed what, a diff between two versions) and
its YAML editor (the schema's errors shown with their paths; a stale edit is refused)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api.audit import origin_of
from api.console.auth import ConsoleUser, check_csrf, console_user
from api.console.pages import error_page, form_fields, page, page_user, parse_id, require_scope
from api.deps import SessionDep, SettingsDep, TemporalDep
from core.accounts.repository import UserRepository
from core.accounts.scopes import PIPELINES_READ, PIPELINES_WRITE
from core.audit.service import write_audit
from core.pipelines import service, versions
from core.pipelines.document import SCHEMA_ID, DocumentInvalid, parse_yaml
from db.models.pipelines import Pipeline
from forgeline.errors import DomainError, NotFound

router = APIRouter(include_in_schema=False)
_LISTED = 100
_MAX_VERSION = 2**31 - 1
_MAX_YAML = 64_000
_MAX_EDIT_FORM = 4 * _MAX_YAML  # URL-encoded YAML takes up to about three times its size


def _version(value: str) -> int | None:
    return int(value) if value.isdigit() and 0 < int(value) <= _MAX_VERSION else None


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(class, text) per line of a unified diff, for colours that do not rely on colour alone
    (the +/- stay in the text)."""
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    return [
        ("meta" if line.startswith(("+++", "---")) else kinds.get(line[:1], "ctx"), line)
        for line in diff.splitlines()
    ]


async def _authors(session: SessionDep, rows: list[Any]) -> dict[uuid.UUID, str]:
    names: dict[uuid.UUID, str] = {}
    users = UserRepository(session)
    for user_id in {r.author_user_id for r in rows if r.author_user_id is not None}:
        user = await users.get(user_id)
        names[user_id] = (user.name or user.email) if user is not None else "a former member"
    return names


@router.get("/pipelines/{pipeline_id}/versions")
async def versions_page(
    request: Request, pipeline_id: str, session: SessionDep, to: str = "", base: str = ""
) -> Response:
    user = await page_user(request, session, PIPELINES_READ)
    try:
        pipeline = await service.get_pipeline(
            session, user.principal, parse_id(pipeline_id), include_archived=True
        )
        rows = list(await versions.list_versions(session, pipeline, before=None, limit=_LISTED))
        newer = _version(to[:12]) or pipeline.version
        older = _version(base[:12]) or max(1, newer - 1)
        new = await versions.get_version(session, pipeline, newer)
        old = await versions.get_version(session, pipeline, older)
        authors = await _authors(session, rows)
    except DomainError as exc:
        return error_page(request, user, exc)
    context: dict[str, Any] = {
        "user": user,
        "pipeline": pipeline,
        "versions": rows[:_LISTED],
        "authors": authors,
        "old": old,
        "new": new,
        "diff": diff_lines(versions.unified_diff(old, new, pipeline.name)),
    }
    return page(request, "pipeline_versions.html", context)


async def _current_yaml(session: SessionDep, pipeline: Pipeline) -> str:
    return versions.version_yaml(await versions.get_version(session, pipeline, pipeline.version))


def _editor(
    user: ConsoleUser,
    pipeline: Pipeline,
    text: str,
    version: int,
    errors: list[dict[str, Any]] | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    return {
        "user": user,
        "pipeline": pipeline,
        "text": text,
        "version": version,
        "errors": errors or [],
        "message": message,
        "schema": SCHEMA_ID,
        "can_write": user.principal.has(PIPELINES_WRITE),
    }


@router.get("/pipelines/{pipeline_id}/edit")
async def edit_page(request: Request, pipeline_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, PIPELINES_READ)
    try:
        pipeline = await service.get_pipeline(session, user.principal, parse_id(pipeline_id))
        text = await _current_yaml(session, pipeline)
    except DomainError as exc:
        return error_page(request, user, exc)
    return page(request, "pipeline_edit.html", _editor(user, pipeline, text, pipeline.version))


@router.post("/pipelines/{pipeline_id}/edit")
async def save(
    request: Request,
    pipeline_id: str,
    session: SessionDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> Response:
    """A new version from the edited YAML, made against the version the editor was opened on."""
    user = await console_user(request, session)
    form = await form_fields(request, limit=_MAX_EDIT_FORM)
    check_csrf(user, form.get("csrf", ""))
    text = form.get("yaml", "")
    expected = _version(form.get("version", "")[:12])
    try:
        require_scope(user, PIPELINES_WRITE)
        pipeline = await service.get_pipeline(session, user.principal, parse_id(pipeline_id))
        if expected is None:
            raise NotFound("not found")
    except DomainError as exc:
        return error_page(request, user, exc)
    try:
        if len(text) > _MAX_YAML:
            raise DocumentInvalid(
                [{"path": "/", "message": "the document is too long to edit here"}]
            )
        document = parse_yaml(text)
        version = await service.put_document(
            session,
            temporal,
            user.principal,
            pipeline.id,
            document,
            expected_version=expected,
            schedule_task_queue=settings.integrations_task_queue,
        )
    except DocumentInvalid as exc:
        context = _editor(user, pipeline, text, expected, errors=exc.errors[:50])
        return page(request, "pipeline_edit.html", context, 422)
    except DomainError as exc:  # a stale edit (409), or a rule of the service
        status = exc.status_code if exc.status_code in (403, 404, 409, 422) else 400
        context = _editor(user, pipeline, text, expected, message=exc.detail)
        return page(request, "pipeline_edit.html", context, status)
    await write_audit(
        session,
        user.principal,
        origin_of(request),
        "pipeline.update",
        "pipeline",
        pipeline.id,
        new={"version": version},
    )
    return RedirectResponse(f"/pipelines/{pipeline.id}/versions", status_code=303)
