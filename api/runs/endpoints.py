"""/v1 routes for pipeline runs: trigger, list, detail, cancel, rerun, logs (download, SSE),
artifacts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from sse_starlette.sse import EventSourceResponse

from api.audit import origin_of
from api.deps import (
    PipelinesReader,
    PipelinesWriter,
    SessionDep,
    SettingsDep,
    TemporalDep,
)
from api.errors import ServiceUnavailable, problems
from api.pagination import Page, PageDep, build_page
from api.runs.downloads import artifact_response
from api.runs.logs import log_reader
from api.runs.render import run_out, stage_out
from api.runs.schemas import ArtifactOut, MatrixStageOut, RunCreate, RunDetailOut, RunOut
from core.audit.service import write_audit
from core.runs import repository, service
from core.runs.logs import (
    MAX_LINE,
    download_blocks,
    first_attempt_events,
    follow_events,
    parse_event_id,
)
from core.runs.matrix_status import matrix_statuses
from db.models.pipelines import PipelineRun
from forgeline.errors import NotFound
from forgeline.statuses.runs import RunStatus

router = APIRouter(tags=["runs"])

_PROBLEMS = problems("Conflict with the run's state")


async def _started(start: Awaitable[PipelineRun]) -> RunOut:
    try:
        return run_out(await start)
    except service.RunNotStarted as exc:
        raise ServiceUnavailable("Temporal is not reachable; the run was not started") from exc


@router.post(
    "/pipelines/{pipeline_id}/runs", status_code=status.HTTP_202_ACCEPTED, responses=_PROBLEMS
)
async def trigger_run(
    pipeline_id: uuid.UUID,
    body: RunCreate,
    session: SessionDep,
    principal: PipelinesWriter,
    settings: SettingsDep,
    temporal: TemporalDep,
    request: Request,
) -> RunOut:
    return await _started(
        service.trigger_as(
            session, settings, temporal, principal, origin_of(request), pipeline_id, body
        )
    )


@router.get("/pipelines/{pipeline_id}/runs", responses=_PROBLEMS)
async def list_runs(
    pipeline_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    page: PageDep,
    status_filter: Annotated[
        RunStatus | None,
        Query(alias="status"),
    ] = None,
) -> Page[RunOut]:
    rows = await repository.list_runs(
        session,
        principal.organization_id,
        pipeline_id,
        status=status_filter,
        cursor=page.cursor,
        limit=page.limit,
    )
    return build_page(rows, limit=page.limit, to_item=run_out)


@router.get("/runs/{run_id}", responses=_PROBLEMS)
async def get_run(
    run_id: uuid.UUID, session: SessionDep, principal: PipelinesReader, temporal: TemporalDep
) -> RunDetailOut:
    run = await repository.get_run(session, principal.organization_id, run_id)
    stages = await repository.stage_executions(session, run.id)
    live = await service.live_status(temporal, run)
    sources = await repository.reused_from_runs(session, stages)
    matrices = matrix_statuses((s.stage_name, s.attempt, s.status) for s in stages)
    return RunDetailOut(
        **run_out(run).model_dump(),
        matrices=[MatrixStageOut(stage=m.stage, status=m.status, legs=m.legs) for m in matrices],
        stages=[
            stage_out(s).model_copy(
                update={"reused_from_run_id": sources.get(s.reused_from_id)}
                if s.reused_from_id
                else {}
            )
            for s in stages
        ],
        live=live,
        queue_position=await repository.queue_position(session, run),
    )


@router.post("/runs/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses=_PROBLEMS)
async def cancel_run(
    run_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    request: Request,
) -> RunOut:
    run = await repository.get_run(session, principal.organization_id, run_id)
    await service.cancel_run(temporal, run)
    await write_audit(
        session, principal, origin_of(request), "pipeline_run.cancel", "pipeline_run", run.id
    )
    return run_out(run)


@router.post("/runs/{run_id}/rerun", status_code=status.HTTP_202_ACCEPTED, responses=_PROBLEMS)
async def rerun(
    run_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesWriter,
    settings: SettingsDep,
    temporal: TemporalDep,
    request: Request,
    from_: Annotated[
        Literal["failed", "start"],
        Query(alias="from", description="`failed` reuses stages that succeeded"),
    ] = "start",
) -> RunOut:
    return await _started(
        service.rerun_as(
            session,
            settings,
            temporal,
            principal,
            origin_of(request),
            run_id,
            from_failed=from_ == "failed",
        )
    )


@router.get(
    "/runs/{run_id}/stages/{stage}/logs",
    responses={**_PROBLEMS, 200: {"content": {"text/plain": {}, "text/event-stream": {}}}},
)
async def stage_logs(
    run_id: uuid.UUID,
    stage: Annotated[str, Path(max_length=100)],
    session: SessionDep,
    principal: PipelinesReader,
    request: Request,
    follow: bool = False,
    attempt: Annotated[
        int | None, Query(ge=1, le=1000, description="One attempt only (default: the latest)")
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=-1,
            le=MAX_LINE,
            description="Last line number already seen, in the first attempt followed",
        ),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Any:
    """The log as a text download, or with `follow=true` as server-sent events: `line` events
    (id `<attempt>:<line>`), `attempt` when a retry starts, then `end` with the final status.
    Without `attempt` the follower starts at the latest attempt and carries on through retries;
    a stage that has not started yet is waited for (`end` is `not_run` if the run ends first)."""
    run = await repository.get_run(session, principal.organization_id, run_id)
    if not follow:
        download = await repository.stage_execution_for_log(session, run.id, stage, attempt)
        filename = f"run-{run.run_number}-{download.stage_name}-{download.attempt}.log"

        return StreamingResponse(
            download_blocks(log_reader(request), download),
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    resume = parse_event_id(last_event_id)
    if attempt is None and resume is not None and resume.attempt is not None:
        # A reconnect continues in the attempt it was reading, even if a retry has started since.
        execution = await repository.stage_execution_for_log(session, run.id, stage, resume.attempt)
        position = resume.line
    else:
        position = after if after is not None else -1
        try:
            execution = await repository.stage_execution_for_log(session, run.id, stage, attempt)
        except NotFound:
            if attempt is not None:
                raise
            # Not started yet: the stream waits for it (unknown stage names are still a 404).
            await repository.require_pipeline_stage(session, run.pipeline_id, stage)
            if resume is not None:
                position = max(position, resume.line)
            return EventSourceResponse(
                first_attempt_events(
                    log_reader(request), run_id=run.id, stage=stage, after=position
                ),
                ping=15,
            )
        if resume is not None and resume.attempt is None:
            position = max(position, resume.line)
        elif resume is not None and resume.attempt == execution.attempt:
            position = resume.line
    events = follow_events(
        log_reader(request),
        run_id=run.id,
        stage=stage,
        execution=execution,
        after=position,
        single_attempt=attempt is not None,
    )
    return EventSourceResponse(events, ping=15)


@router.get("/runs/{run_id}/artifacts", responses=_PROBLEMS)
async def list_artifacts(
    run_id: uuid.UUID, session: SessionDep, principal: PipelinesReader
) -> list[ArtifactOut]:
    run = await repository.get_run(session, principal.organization_id, run_id)
    rows = await repository.list_artifacts(session, run.id)
    return [
        ArtifactOut(
            id=a.id,
            name=a.name,
            size_bytes=a.size_bytes,
            sha256=a.sha256,
            content_type=a.content_type,
            stage_execution_id=a.stage_execution_id,
            created_at=a.created_at,
            produced_by_run_id=a.run_id,
        )
        for a in rows
    ]


@router.get(
    "/runs/{run_id}/artifacts/{artifact_id}",
    responses={**_PROBLEMS, 200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(
    run_id: uuid.UUID,
    artifact_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    request: Request,
) -> StreamingResponse:
    run = await repository.get_run(session, principal.organization_id, run_id)
    artifact = await repository.get_artifact(session, run.id, artifact_id)
    return await artifact_response(
        request,
        artifact,
        filename=artifact.name.rsplit("/", 1)[-1],
        media_type=artifact.content_type or "application/octet-stream",
    )
