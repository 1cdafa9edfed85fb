"""Agent task use cases: validate, write the intent row, start the workflow after the commit."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.agent.schemas import (
    AgentExecutionOut,
    AgentStepOut,
    AgentTaskCreate,
    AgentTaskDetail,
    AgentTaskOut,
    ToolInvocationOut,
)
from api.audit import write_audit
from api.deps import Principal
from core.billing.limits import enforce_limit
from db.models.agent import AgentExecution, AgentStep, AgentTask, ToolInvocation
from db.models.operations import WorkflowExecution
from db.models.pipelines import PipelineRun
from db.models.projects import Environment, Project, Repository
from forgeline.errors import Conflict, NotFound, ValidationFailed
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import AGENT_TASK_QUEUE, Settings
from forgeline.url_safety import parse_repository_url
from workflows.agent_models import AgentTaskInputData, AgentTaskWorkflowInput
from workflows.agent_task import AgentTaskWorkflow

log = logging.getLogger("forgeline.api.agent")
KIND = "agent_task"
TERMINAL = ("completed", "failed", "cancelled")
DESCRIBE_TIMEOUT = timedelta(seconds=5)


def workflow_id_for(task_id: uuid.UUID) -> str:
    return f"agent-task-{task_id}"


def search_attributes(org_id: uuid.UUID, project_id: uuid.UUID) -> TypedSearchAttributes:
    return forgeline_search_attributes(KIND, organization_id=org_id, project_id=project_id)


async def _project(session: AsyncSession, principal: Principal, project_id: uuid.UUID) -> Project:
    project = (
        await session.execute(
            select(Project).where(
                Project.id == project_id, Project.organization_id == principal.organization_id
            )
        )
    ).scalar_one_or_none()
    if project is None:
        raise NotFound("project not found", resource_type="project")
    return project


async def create_task(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    settings: Settings,
    project_id: uuid.UUID,
    body: AgentTaskCreate,
) -> AgentTask:
    """Validate and insert the pending task (flushed, not committed: the endpoint commits)."""
    project = await _project(session, principal, project_id)
    if project.status == "archived":
        raise Conflict("the project is archived; unarchive it first")
    repo = (
        await session.execute(select(Repository).where(Repository.project_id == project.id))
    ).scalar_one_or_none()
    if repo is None:
        raise ValidationFailed(
            "connect a repository to the project first (PUT /v1/projects/{id}/repository)",
            field="repository",
        )
    # Cheap re-check (no DNS); the clone re-validates and pins the address right before cloning.
    parse_repository_url(repo.url, allow_local=settings.allow_local_repositories)
    data = body.input_data
    if body.task_type == "troubleshoot_failure":
        if data.pipeline_run_id is None:
            raise ValidationFailed(
                "troubleshoot_failure needs input_data.pipeline_run_id", field="pipeline_run_id"
            )
        run = (
            await session.execute(
                select(PipelineRun.id).where(
                    PipelineRun.id == data.pipeline_run_id, PipelineRun.project_id == project.id
                )
            )
        ).first()
        if run is None:
            raise NotFound("pipeline run not found in this project", resource_type="pipeline_run")
    await _resolve_deploy_environment(session, project.id, data)
    if body.task_type == "generate_pipeline":
        # The generated pipeline counts against the plan: refuse before any work starts.
        await _enforce_pipeline_limit(session, principal.organization_id, project.id)
    task_id = uuid.uuid4()
    task = AgentTask(
        id=task_id,
        organization_id=principal.organization_id,
        project_id=project.id,
        task_type=body.task_type,
        status="pending",
        input_data=data.model_dump(mode="json", exclude_none=True),
        token_budget=body.token_budget,
        workflow_id=workflow_id_for(task_id),
        created_by_user_id=principal.user_id,
        created_by_api_key_id=principal.api_key_id,
    )
    session.add(task)
    await session.flush()
    await write_audit(
        session,
        principal,
        request,
        "agent_task.created",
        "agent_task",
        task.id,
        None,
        {"task_type": task.task_type, "project_id": str(project.id)},
        metadata={"project_id": str(project.id)},
    )
    return task


async def _resolve_deploy_environment(
    session: AsyncSession, project_id: uuid.UUID, data: AgentTaskInputData
) -> None:
    """A chosen deploy environment must be a live environment of the task's own project."""
    prefs = data.preferences
    # The name is ours to fill in (it ends up in a generated command), never the client's.
    prefs.deploy_environment_name = None
    if prefs.deploy_environment_id is None:
        return
    env = (
        await session.execute(
            select(Environment.name, Environment.status).where(
                Environment.id == prefs.deploy_environment_id,
                Environment.project_id == project_id,
            )
        )
    ).first()
    if env is None or env.status == "deleted":
        raise NotFound("deploy environment not found in this project", resource_type="environment")
    prefs.deploy_environment_name = env.name


async def _enforce_pipeline_limit(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID
) -> None:
    await enforce_limit(
        session, organization_id, "pipelines_per_project", project_id=project_id
    )


async def start_task_workflow(
    session: AsyncSession,
    temporal: Client,
    task: AgentTask,
    project_name: str,
    *,
    task_queue: str = AGENT_TASK_QUEUE,
) -> None:
    """Called after the task row is committed; an already-started workflow is fine."""
    assert task.organization_id is not None
    wf_id = workflow_id_for(task.id)
    memo = {"project": project_name, "task_type": task.task_type}
    try:
        handle = await temporal.start_workflow(
            AgentTaskWorkflow.run,
            AgentTaskWorkflowInput(
                task_id=task.id,
                organization_id=task.organization_id,
                project_id=task.project_id,
                task_type=task.task_type,  # type: ignore[arg-type]
            ),
            id=wf_id,
            task_queue=task_queue,
            search_attributes=search_attributes(task.organization_id, task.project_id),
            memo=memo,
        )
        run_id = handle.first_execution_run_id or handle.result_run_id or ""
    except WorkflowAlreadyStartedError as exc:
        run_id = exc.run_id or ""
    await session.execute(
        insert(WorkflowExecution)
        .values(
            kind=KIND,
            workflow_type="AgentTaskWorkflow",
            workflow_id=wf_id,
            run_id=run_id,
            task_queue=task_queue,
            organization_id=task.organization_id,
            project_id=task.project_id,
            resource_type=KIND,
            resource_id=task.id,
            status="running",
            search_attributes={
                "ForgelineOrgId": str(task.organization_id),
                "ForgelineProjectId": str(task.project_id),
                "ForgelineKind": KIND,
            },
            memo=memo,
        )
        .on_conflict_do_nothing(index_elements=["workflow_id", "run_id"])
    )


async def mark_start_failed(session: AsyncSession, task_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id, AgentTask.status == "pending")
        .values(status="failed", error=reason)
    )


async def get_task(session: AsyncSession, principal: Principal, task_id: uuid.UUID) -> AgentTask:
    task = (
        await session.execute(
            select(AgentTask).where(
                AgentTask.id == task_id, AgentTask.organization_id == principal.organization_id
            )
        )
    ).scalar_one_or_none()
    if task is None:
        raise NotFound("agent task not found", resource_type="agent_task")
    return task


async def task_detail(session: AsyncSession, task: AgentTask) -> AgentTaskDetail:
    executions = (
        (
            await session.execute(
                select(AgentExecution)
                .where(AgentExecution.task_id == task.id)
                .order_by(AgentExecution.sequence)
            )
        )
        .scalars()
        .all()
    )
    exec_ids = [e.id for e in executions]
    steps = (
        (
            await session.execute(
                select(AgentStep)
                .where(AgentStep.execution_id.in_(exec_ids))
                .order_by(AgentStep.step_number)
            )
        )
        .scalars()
        .all()
        if exec_ids
        else []
    )
    invocations = (
        (
            await session.execute(
                select(ToolInvocation)
                .where(ToolInvocation.execution_id.in_(exec_ids))
                .order_by(ToolInvocation.invoked_at, ToolInvocation.invocation_key)
            )
        )
        .scalars()
        .all()
        if exec_ids
        else []
    )
    by_step: dict[uuid.UUID | None, list[ToolInvocationOut]] = {}
    for inv in invocations:
        by_step.setdefault(inv.step_id, []).append(ToolInvocationOut.model_validate(inv))
    steps_by_exec: dict[uuid.UUID, list[AgentStepOut]] = {}
    for step in steps:
        step_out = AgentStepOut.model_validate(step, from_attributes=True)
        step_out.tool_invocations = by_step.get(step.id, [])
        steps_by_exec.setdefault(step.execution_id, []).append(step_out)
    detail = AgentTaskDetail(**AgentTaskOut.model_validate(task).model_dump())
    for execution in executions:
        exec_out = AgentExecutionOut.model_validate(_columns(execution))
        exec_out.steps = steps_by_exec.get(execution.id, [])
        detail.executions.append(exec_out)
    return detail


async def cancel_task(
    session: AsyncSession,
    principal: Principal,
    request: Request | None,
    temporal: Client,
    task_id: uuid.UUID,
) -> AgentTask:
    task = await get_task(session, principal, task_id)
    if task.status in TERMINAL:
        raise Conflict(f"the task is already {task.status}")
    handle = temporal.get_workflow_handle(task.workflow_id or workflow_id_for(task.id))
    running = False
    with contextlib.suppress(RPCError):
        # Bounded: an unreachable or stalled Temporal must not hold the request.
        desc = await handle.describe(rpc_timeout=DESCRIBE_TIMEOUT)
        running = desc.status == WorkflowExecutionStatus.RUNNING
    if running:
        await handle.cancel()
    else:
        # Never started (or already gone): nothing will record the cancellation but us.
        await session.execute(
            update(AgentTask)
            .where(AgentTask.id == task.id, AgentTask.status.in_(("pending", "running")))
            .values(status="cancelled", error="cancelled by user")
        )
        await session.refresh(task)
    await write_audit(
        session,
        principal,
        request,
        "agent_task.cancelled",
        "agent_task",
        task.id,
        {"status": task.status},
        None,
    )
    return task


def list_filters(principal: Principal, project_id: uuid.UUID) -> list[Any]:
    return [
        AgentTask.organization_id == principal.organization_id,
        AgentTask.project_id == project_id,
    ]


def _columns(row: Any) -> dict[str, Any]:
    """Column values only: relationships are lazy='raise' and must not be touched."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def out(task: AgentTask) -> AgentTaskOut:
    return AgentTaskOut.model_validate(task)
