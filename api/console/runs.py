"""Console pages of runs: a project's runs filtered by status, branch and trigger; a run's stage
graph, live stage logs (server-sent events), artifacts; cancel, re-run, re-run from failed."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse, Response
from sse_starlette.sse import EventSourceResponse

from api.audit import origin_of
from api.console.auth import console_user
from api.console.graph import layout
from api.console.pages import (
    error_page,
    page,
    page_user,
    parse_id,
    posted_form,
    require_project,
    require_scope,
    unavailable_page,
)
from api.console.run_stages import run_stage_shapes
from api.deps import SessionDep, SettingsDep, TemporalDep
from api.pagination import created_key, page_window
from api.runs.downloads import artifact_response
from api.runs.logs import log_reader
from core.accounts.scopes import PIPELINES_READ, PIPELINES_WRITE
from core.audit.service import write_audit
from core.pipelines import repository as pipelines
from core.runs import repository as runs
from core.runs import service as run_service
from core.runs.logs import first_attempt_events, follow_events, parse_event_id
from core.runs.run_filters import (
    RUN_STATUS_VALUES,
    TRIGGER_VALUES,
    RunFilter,
    project_branches,
    project_runs,
)
from forgeline.errors import DomainError, NotFound
from forgeline.statuses.runs import FINISHED_RUN_STATUSES

router = APIRouter(include_in_schema=False)
_MAX_LINE = 2**31 - 2
_PAGE = 50


def _optional_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@router.get("/projects/{project_id}/runs")
async def run_list(
    request: Request,
    project_id: str,
    session: SessionDep,
    status: str = "",
    branch: str = "",
    trigger: str = "",
    pipeline: str = "",
    cursor: str | None = None,
) -> Response:
    """Filters live in the query string, so a filtered list is a link to share."""
    user = await console_user(request, session)
    org = user.principal.organization_id
    wanted = RunFilter.parse(status[:20], branch, trigger[:20], _optional_id(pipeline[:40]))
    try:
        require_scope(user, PIPELINES_READ)
        project = await require_project(session, user, project_id)
        rows = await project_runs(
            session, org, project.id, wanted, cursor=(cursor or None) and cursor[:200], limit=_PAGE
        )
        branches = await project_branches(session, org, project.id)
        pipeline_rows = list(
            await pipelines.list_for_project(session, org, project.id, cursor=None, limit=50)
        )[:50]
    except DomainError as exc:
        return error_page(request, user, exc)
    shown, next_cursor = page_window(rows, _PAGE, key=lambda row: created_key(row[0]))
    context: dict[str, Any] = {
        "user": user,
        "project": project,
        "rows": shown,
        "wanted": wanted,
        "statuses": RUN_STATUS_VALUES,
        "triggers": TRIGGER_VALUES,
        "branches": branches,
        "pipelines": pipeline_rows,
        "next_cursor": next_cursor,
    }
    return page(request, "runs.html", context)


async def _run_view(request: Request, run_id: str, session: SessionDep) -> dict[str, Any]:
    """What the run page and its live header show; DomainError for a run not the user's."""
    user = await console_user(request, session)
    require_scope(user, PIPELINES_READ)
    run = await runs.get_run(session, user.principal.organization_id, parse_id(run_id))
    return {
        "user": user,
        "run": run,
        "can_write": user.principal.has(PIPELINES_WRITE),
        "finished": run.status in FINISHED_RUN_STATUSES,
        "failed": run.status in ("failed", "cancelled"),
    }


@router.get("/runs/{run_id}")
async def runpage(request: Request, run_id: str, session: SessionDep) -> Response:
    try:
        context = await _run_view(request, run_id, session)
        run = context["run"]
        stages = await runs.stage_executions(session, run.id)
        artifacts = await runs.list_artifacts(session, run.id)
    except DomainError as exc:
        return error_page(request, await console_user(request, session), exc)
    latest: dict[str, Any] = {}
    for stage in stages:
        latest[stage.stage_name] = stage
    shapes = await run_stage_shapes(session, run, list(latest))
    graph = layout(
        shapes,
        {name: s.status for name, s in latest.items()},
        {name: s.duration_ms for name, s in latest.items()},
    )
    # Every stage of the graph gets a log pane, started or not: a stage that has not started
    # yet is followed too, and its lines arrive when it runs.
    panes = [(node.name, node.anchor, latest.get(node.name)) for node in graph.nodes]
    context.update(graph=graph, panes=panes, artifacts=artifacts)
    return page(request, "run.html", context)


@router.get("/runs/{run_id}/head")
async def run_head(request: Request, run_id: str, session: SessionDep) -> Response:
    """The run's status and actions, polled by the page (htmx) until the run has finished."""
    try:
        context = await _run_view(request, run_id, session)
    except DomainError as exc:
        return error_page(request, await console_user(request, session), exc)
    return page(request, "_run_head.html", context)


@router.post("/runs/{run_id}/cancel")
async def cancel(
    request: Request, run_id: str, session: SessionDep, temporal: TemporalDep
) -> Response:
    user, _form = await posted_form(request, session, PIPELINES_WRITE)
    try:
        run = await runs.get_run(session, user.principal.organization_id, parse_id(run_id))
        await run_service.cancel_run(temporal, run)
    except DomainError as exc:
        return error_page(request, user, exc)
    await write_audit(
        session, user.principal, origin_of(request), "pipeline_run.cancel", "pipeline_run", run.id
    )
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.post("/runs/{run_id}/rerun")
async def rerun(
    request: Request,
    run_id: str,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> Response:
    user, form = await posted_form(request, session, PIPELINES_WRITE)
    from_failed = form.get("from") == "failed"
    try:
        new = await run_service.rerun_as(
            session,
            settings,
            temporal,
            user.principal,
            origin_of(request),
            parse_id(run_id),
            from_failed=from_failed,
        )
    except run_service.RunNotStarted:
        message = "Temporal is not reachable; retry later"
        return unavailable_page(request, user, message)
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/runs/{new.id}", status_code=303)


@router.get("/runs/{run_id}/stages/{stage}/stream")
async def stage_stream(
    request: Request,
    run_id: str,
    stage: str,
    session: SessionDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """A stage's log as server-sent events for the page's EventSource (the session cookie). A
    reconnecting EventSource sends the last event ID: the stream goes on after that line."""
    user = await console_user(request, session)
    resume = parse_event_id(last_event_id[:40] if last_event_id else None)
    if resume is not None and (resume.line > _MAX_LINE or (resume.attempt or 1) > _MAX_LINE):
        resume = None  # beyond any stored log (the columns are 32-bit): ignored, not an error
    try:
        require_scope(user, PIPELINES_READ)
        if len(stage) > 100:
            raise NotFound("stage not found")
        run = await runs.get_run(session, user.principal.organization_id, parse_id(run_id))
        wanted = resume.attempt if resume is not None else None
        try:
            execution = await runs.stage_execution_for_log(session, run.id, stage, wanted)
        except NotFound:
            if wanted is not None:
                raise
            await runs.require_pipeline_stage(session, run.pipeline_id, stage)
            after = resume.line if resume is not None else -1
            events = first_attempt_events(
                log_reader(request), run_id=run.id, stage=stage, after=after
            )
            return EventSourceResponse(events, ping=15)
    except DomainError as exc:
        return error_page(request, user, exc)
    return EventSourceResponse(
        follow_events(
            log_reader(request),
            run_id=run.id,
            stage=stage,
            execution=execution,
            after=resume.line if resume is not None else -1,
            single_attempt=False,
        ),
        ping=15,
    )


@router.get("/runs/{run_id}/artifacts/{artifact_id}")
async def artifact_download(
    request: Request, run_id: str, artifact_id: str, session: SessionDep
) -> Response:
    """An artifact of a run of the user's organization, streamed from the object store."""
    user = await page_user(request, session, PIPELINES_READ)
    try:
        run = await runs.get_run(session, user.principal.organization_id, parse_id(run_id))
        artifact = await runs.get_artifact(session, run.id, parse_id(artifact_id))
    except DomainError as exc:
        return error_page(request, user, exc)
    base = artifact.name.rsplit("/", 1)[-1]
    filename = "".join(c for c in base if c.isalnum() or c in "._-")[:200]
    return await artifact_response(
        request,
        artifact,
        filename=filename or "artifact",
        media_type="application/octet-stream",
        headers={"X-Content-Type-Options": "nosniff"},
    )
