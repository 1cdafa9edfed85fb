"""Console pages of pipelines: a pipeline's stage graph and stages, and triggering a run."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.audit import origin_of
from api.console.graph import StageShape, layout
from api.console.pages import (
    error_page,
    page,
    page_user,
    parse_id,
    posted_form,
    unavailable_page,
)
from api.deps import SessionDep, SettingsDep, TemporalDep
from core.accounts.scopes import PIPELINES_READ, PIPELINES_WRITE
from core.pipelines import repository as pipelines
from core.runs import repository as runs
from core.runs import service as run_service
from core.runs.schemas import RunCreate
from forgeline.errors import DomainError, NotFound, ValidationFailed

router = APIRouter(include_in_schema=False)


@router.get("/pipelines/{pipeline_id}")
async def pipeline_page(request: Request, pipeline_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, PIPELINES_READ)
    org = user.principal.organization_id
    try:
        pipeline = await pipelines.get(session, org, parse_id(pipeline_id))
        if pipeline is None:
            raise NotFound("pipeline not found")
        stages = await pipelines.stages_of(session, pipeline.id)
        recent = (
            await runs.list_runs(session, org, pipeline.id, status=None, cursor=None, limit=10)
        )[:10]
    except DomainError as exc:
        return error_page(request, user, exc)
    graph = layout([StageShape(s.name, s.position, list(s.depends_on or [])) for s in stages])
    context: dict[str, Any] = {
        "user": user,
        "pipeline": pipeline,
        "stages": stages,
        "graph": graph,
        "runs": recent,
        "can_write": user.principal.has(PIPELINES_WRITE),
    }
    return page(request, "pipeline.html", context)


@router.post("/pipelines/{pipeline_id}/runs")
async def trigger(
    request: Request,
    pipeline_id: str,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> Response:
    user, form = await posted_form(request, session, PIPELINES_WRITE)
    try:
        try:
            body = RunCreate(trigger="manual", branch=form.get("branch", "").strip() or None)
        except ValidationError:
            raise ValidationFailed("That is not a valid branch name") from None
        run = await run_service.trigger_as(
            session,
            settings,
            temporal,
            user.principal,
            origin_of(request),
            parse_id(pipeline_id),
            body,
        )
    except run_service.RunNotStarted:
        message = "Temporal is not reachable; retry later"
        return unavailable_page(request, user, message)
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)
