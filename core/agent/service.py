"""Agent task use cases: validate, write the intent row, start the workflow after the commit,
read a task with its history, cancel. Transport-free: the API adapts them to HTTP."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from core.agent import repository
from core.audit.origin import Origin
from core.audit.service import write_audit
from core.billing.limits import enforce_limit
from core.principal import Principal
from db.models.agent import AgentTask
from db.models.operations import WorkflowExecution
from db.models.projects import Project
from forgeline.errors import Conflict, DomainError, NotFound, ValidationFailed, found
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import AGENT_TASK_QUEUE, PIPELINES_TASK_QUEUE, Settings
from forgeline.statuses.agent import TERMINAL_TASK_STATUSES, AgentTaskStatus, AgentTaskType
from forgeline.url_safety import parse_repository_url
from workflows.agent_models import AgentTaskInputData, AgentTaskWorkflowInput
from workflows.agent_task import AgentTaskWorkflow

KIND = "agent_task"
DESCRIBE_TIMEOUT = timedelta(seconds=5)
CANCELLED_BY_USER = "cancelled by user"


class TaskNotStarted(Exception):
    """Temporal did not accept the task's workflow; the task is marked failed and committed."""


def workflow_id_for(task_id: uuid.UUID) -> str:
    return f"agent-task-{task_id}"


def search_attributes(org_id: uuid.UUID, project_id: uuid.UUID) -> TypedSearchAttributes:
    return forgeline_search_attributes(KIND, organization_id=org_id, project_id=project_id)


async def project_of(session: AsyncSession, principal: Principal, project_id: uuid.UUID) -> Project:
    """The caller's project; another organization's is not found."""
    return found(
        await repository.project_in_org(session, principal.organization_id, project_id),
        "project",
    )


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Sequence[AgentTask]:
    """A page of the project's tasks; another organization's project is not found."""
    await project_of(session, principal, project_id)
    return await repository.tasks_of_project(
        session, principal.organization_id, project_id, cursor=cursor, limit=limit
    )


async def create_task(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    project_id: uuid.UUID,
    task_type: AgentTaskType,
    data: AgentTaskInputData,
    token_budget: int | None,
) -> AgentTask:
    """Validate and insert the pending task (flushed, not committed: the caller commits)."""
    project = await project_of(session, principal, project_id)
    if project.status == "archived":
        raise Conflict("the project is archived; unarchive it first")
    repo = await repository.repository_of(session, project.id)
    if repo is None:
        raise ValidationFailed(
            "connect a repository to the project first (PUT /v1/projects/{id}/repository)",
            field="repository",
        )
    # Cheap re-check (no DNS); the clone re-validates and pins the address right before cloning.
    parse_repository_url(repo.url, allow_local=settings.allow_local_repositories)
    if task_type == AgentTaskType.TROUBLESHOOT_FAILURE:
        if data.pipeline_run_id is None:
            raise ValidationFailed(
                "troubleshoot_failure needs input_data.pipeline_run_id", field="pipeline_run_id"
            )
        if not await repository.run_in_project(session, data.pipeline_run_id, project.id):
            raise NotFound("pipeline run not found in this project", resource_type="pipeline_run")
    if data.verify and task_type != AgentTaskType.GENERATE_PIPELINE:
        raise ValidationFailed(
            "verify runs a generated pipeline: only generate_pipeline takes it", field="verify"
        )
    await _resolve_deploy_environment(session, project.id, data)
    if task_type == AgentTaskType.GENERATE_PIPELINE:
        # The generated pipeline counts against the plan: refuse before any work starts.
        await enforce_limit(
            session, principal.organization_id, "pipelines_per_project", project_id=project.id
        )
    task_id = uuid.uuid4()
    task = AgentTask(
        id=task_id,
        organization_id=principal.organization_id,
        project_id=project.id,
        task_type=task_type,
        status=AgentTaskStatus.PENDING,
        input_data=data.model_dump(mode="json", exclude_none=True),
        token_budget=token_budget,
        workflow_id=workflow_id_for(task_id),
        created_by_user_id=principal.user_id,
        created_by_api_key_id=principal.api_key_id,
    )
    session.add(task)
    await session.flush()
    await write_audit(
        session,
        principal,
        origin,
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
    env = await repository.environment_of(session, prefs.deploy_environment_id, project_id)
    if env is None or env[1] == "deleted":
        raise NotFound("deploy environment not found in this project", resource_type="environment")
    prefs.deploy_environment_name = env[0]


async def start_task_workflow(
    session: AsyncSession,
    temporal: Client,
    task: AgentTask,
    *,
    task_queue: str = AGENT_TASK_QUEUE,
    runs_task_queue: str = PIPELINES_TASK_QUEUE,
) -> None:
    """Called after the task row is committed; an already-started workflow is fine."""
    assert task.organization_id is not None
    data = AgentTaskInputData.model_validate(task.input_data or {})
    wf_id = workflow_id_for(task.id)
    project_name = await repository.project_name(session, task.project_id)
    memo = {"project": project_name, "task_type": task.task_type}
    try:
        handle = await temporal.start_workflow(
            AgentTaskWorkflow.run,
            AgentTaskWorkflowInput(
                task_id=task.id,
                organization_id=task.organization_id,
                project_id=task.project_id,
                task_type=AgentTaskType(task.task_type),
                verify=data.verify,
                verify_attempts=data.verify_attempts,
                verification_task_queue=runs_task_queue,
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


async def create_and_start(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    temporal: Client,
    project_id: uuid.UUID,
    task_type: AgentTaskType,
    data: AgentTaskInputData,
    token_budget: int | None,
) -> AgentTask:
    """Create the task, commit the intent row (the workflow reads it back), start the workflow;
    TaskNotStarted when Temporal refuses (the task is then committed as failed)."""
    task = await create_task(
        session, principal, origin, settings, project_id, task_type, data, token_budget
    )
    await session.commit()
    try:
        await start_task_workflow(session, temporal, task)
    except DomainError:
        raise
    except Exception as exc:
        await mark_start_failed(session, task.id, "the workflow could not be started")
        await session.commit()
        raise TaskNotStarted() from exc
    return task


async def mark_start_failed(session: AsyncSession, task_id: uuid.UUID, reason: str) -> None:
    await repository.mark_start_failed(session, task_id, reason)


async def get_task(session: AsyncSession, principal: Principal, task_id: uuid.UUID) -> AgentTask:
    """The caller's task; another organization's is not found."""
    return found(
        await repository.task_in_org(session, principal.organization_id, task_id),
        "agent_task",
    )


async def task_with_history(
    session: AsyncSession, principal: Principal, task_id: uuid.UUID
) -> tuple[AgentTask, repository.TaskHistory]:
    """The caller's task with its executions, steps and tool calls."""
    task = await get_task(session, principal, task_id)
    return task, await repository.task_history(session, task.id)


async def live_progress(temporal: Client, task: AgentTask) -> dict[str, object] | None:
    """The running workflow's phase, step and tokens; None when finished or unreachable (the
    stored task is the answer then)."""
    if task.status in TERMINAL_TASK_STATUSES:
        return None
    handle = temporal.get_workflow_handle(task.workflow_id or workflow_id_for(task.id))
    try:
        progress: dict[str, object] = await handle.query(
            AgentTaskWorkflow.progress, rpc_timeout=DESCRIBE_TIMEOUT
        )
    except Exception:  # a live view is a bonus; Postgres stays the answer
        return None
    return progress


async def cancel_task(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    temporal: Client,
    task_id: uuid.UUID,
) -> AgentTask:
    task = await get_task(session, principal, task_id)
    if task.status in TERMINAL_TASK_STATUSES:
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
        await repository.cancel_open_task(session, task.id, CANCELLED_BY_USER)
        await session.refresh(task)
    await write_audit(
        session,
        principal,
        origin,
        "agent_task.cancelled",
        "agent_task",
        task.id,
        {"status": task.status},
        None,
    )
    return task
