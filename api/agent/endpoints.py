"""/v1 routes of agent tasks: start (202), read with steps and tool calls, cancel, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from sqlalchemy import select

from api.agent import service
from api.agent.schemas import AgentTaskCreate, AgentTaskDetail, AgentTaskOut
from api.deps import (
    PIPELINES_READ,
    PIPELINES_WRITE,
    Principal,
    SessionDep,
    SettingsDep,
    TemporalDep,
    require_scope,
)
from api.errors import ServiceUnavailable
from api.pagination import CursorParam, LimitParam, Page, build_page, paginate
from db.models.agent import AgentTask
from db.models.projects import Project
from forgeline.errors import DomainError

router = APIRouter(tags=["agent"])

Reader = Annotated[Principal, Depends(require_scope(PIPELINES_READ))]
Writer = Annotated[Principal, Depends(require_scope(PIPELINES_WRITE))]
_PROBLEMS: dict[int | str, dict[str, str]] = {
    404: {"description": "Not found (or owned by another organization)"},
    409: {"description": "Conflict with the task's state"},
    422: {"description": "Validation failed"},
}


@router.post(
    "/projects/{project_id}/agent-tasks",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def create_agent_task(
    project_id: uuid.UUID,
    body: AgentTaskCreate,
    session: SessionDep,
    principal: Writer,
    temporal: TemporalDep,
    settings: SettingsDep,
    request: Request,
) -> AgentTaskOut:
    """Start an agent task; the workflow ID is `agent-task-{task id}`."""
    task = await service.create_task(session, principal, request, settings, project_id, body)
    project_name = (
        await session.execute(select(Project.name).where(Project.id == project_id))
    ).scalar_one()
    # The intent row is committed before the workflow starts (the workflow reads it back).
    await session.commit()
    try:
        await service.start_task_workflow(session, temporal, task, project_name)
    except DomainError:
        raise
    except Exception as exc:
        await service.mark_start_failed(session, task.id, "the workflow could not be started")
        await session.commit()
        raise ServiceUnavailable("Temporal did not accept the workflow; retry shortly") from exc
    return service.out(task)


@router.get("/agent-tasks/{task_id}", responses=_PROBLEMS)
async def get_agent_task(
    task_id: uuid.UUID, session: SessionDep, principal: Reader
) -> AgentTaskDetail:
    task = await service.get_task(session, principal, task_id)
    return await service.task_detail(session, task)


@router.post(
    "/agent-tasks/{task_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses=_PROBLEMS
)
async def cancel_agent_task(
    task_id: uuid.UUID,
    session: SessionDep,
    principal: Writer,
    temporal: TemporalDep,
    request: Request,
) -> AgentTaskOut:
    task = await service.cancel_task(session, principal, request, temporal, task_id)
    return service.out(task)


@router.get("/projects/{project_id}/agent-tasks", responses=_PROBLEMS)
async def list_agent_tasks(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> Page[AgentTaskOut]:
    await service._project(session, principal, project_id)
    stmt = paginate(
        select(AgentTask).where(*service.list_filters(principal, project_id)),
        AgentTask.created_at,
        AgentTask.id,
        cursor=cursor,
        limit=limit,
    )
    rows = (await session.execute(stmt)).scalars().all()
    return build_page(rows, limit=limit, key=lambda r: (r.created_at, r.id), to_item=service.out)
