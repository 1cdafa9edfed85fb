"""/v1 routes of agent tasks: start (202), read with steps and tool calls, cancel, list."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from fastapi import APIRouter, Request, status

from api.agent.schemas import (
    AgentExecutionOut,
    AgentStepOut,
    AgentTaskApply,
    AgentTaskCreate,
    AgentTaskDetail,
    AgentTaskOut,
    AppliedProposal,
    ToolInvocationOut,
)
from api.audit import origin_of
from api.deps import (
    PipelinesReader,
    PipelinesWriter,
    SessionDep,
    SettingsDep,
    TemporalDep,
    get_temporal,
)
from api.errors import ServiceUnavailable, problems
from api.pagination import Page, PageDep, build_page
from core.agent import service
from core.agent.apply import apply_proposal
from core.agent.repository import TaskHistory
from db.models.agent import AgentTask
from forgeline.statuses.agent import TERMINAL_TASK_STATUSES

router = APIRouter(tags=["agent"])

_PROBLEMS = problems("Conflict with the task's state")


@router.post(
    "/projects/{project_id}/agent-tasks",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def create_agent_task(
    project_id: uuid.UUID,
    body: AgentTaskCreate,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    settings: SettingsDep,
    request: Request,
) -> AgentTaskOut:
    """Start an agent task; the workflow ID is `agent-task-{task id}`."""
    try:
        task = await service.create_and_start(
            session,
            principal,
            origin_of(request),
            settings,
            temporal,
            project_id,
            body.task_type,
            body.input_data,
            body.token_budget,
        )
    except service.TaskNotStarted as exc:
        raise ServiceUnavailable("Temporal did not accept the workflow; retry shortly") from exc
    return AgentTaskOut.model_validate(task)


@router.get("/agent-tasks/{task_id}", responses=_PROBLEMS)
async def get_agent_task(
    task_id: uuid.UUID, session: SessionDep, principal: PipelinesReader, request: Request
) -> AgentTaskDetail:
    task, history = await service.task_with_history(session, principal, task_id)
    detail = _detail(task, history)
    if task.status not in TERMINAL_TASK_STATUSES:
        # The live phase is a bonus: without Temporal the stored task still answers.
        with contextlib.suppress(ServiceUnavailable):
            temporal = await get_temporal(request)
            detail.live = await service.live_progress(temporal, task)
    return detail


@router.post(
    "/agent-tasks/{task_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses=_PROBLEMS
)
async def cancel_agent_task(
    task_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesWriter,
    temporal: TemporalDep,
    request: Request,
) -> AgentTaskOut:
    task = await service.cancel_task(session, principal, origin_of(request), temporal, task_id)
    return AgentTaskOut.model_validate(task)


@router.post("/agent-tasks/{task_id}/apply", responses=_PROBLEMS)
async def apply_agent_task(
    task_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesWriter,
    request: Request,
    body: AgentTaskApply | None = None,
) -> AppliedProposal:
    """The task's proposed pipeline as the next version of a pipeline of its project; 409 when
    that pipeline changed after the task started, or the task proposed nothing."""
    row = await apply_proposal(
        session, principal, origin_of(request), task_id, body.pipeline_id if body else None
    )
    return AppliedProposal.model_validate(row, from_attributes=True)


@router.get("/projects/{project_id}/agent-tasks", responses=_PROBLEMS)
async def list_agent_tasks(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: PipelinesReader,
    page: PageDep,
) -> Page[AgentTaskOut]:
    rows = await service.list_tasks(
        session, principal, project_id, cursor=page.cursor, limit=page.limit
    )
    return build_page(
        rows,
        limit=page.limit,
        to_item=AgentTaskOut.model_validate,
    )


def _detail(task: AgentTask, history: TaskHistory) -> AgentTaskDetail:
    """The task with its executions, each with its steps, each with its tool calls."""
    by_step: dict[uuid.UUID | None, list[ToolInvocationOut]] = {}
    for inv in history.invocations:
        by_step.setdefault(inv.step_id, []).append(ToolInvocationOut.model_validate(inv))
    steps_by_exec: dict[uuid.UUID, list[AgentStepOut]] = {}
    for step in history.steps:
        step_out = AgentStepOut.model_validate(step, from_attributes=True)
        step_out.tool_invocations = by_step.get(step.id, [])
        steps_by_exec.setdefault(step.execution_id, []).append(step_out)
    detail = AgentTaskDetail(**AgentTaskOut.model_validate(task).model_dump())
    for execution in history.executions:
        exec_out = AgentExecutionOut.model_validate(_columns(execution))
        exec_out.steps = steps_by_exec.get(execution.id, [])
        detail.executions.append(exec_out)
    return detail


def _columns(row: Any) -> dict[str, Any]:
    """Column values only: relationships are lazy='raise' and must not be touched."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
