"""One verification of a project at a time, against closes outside Forgeline: a verification whose
workflow an operator terminated (Temporal client, as the UI or CLI does) releases the project at
the next verification's first tries and its row is closed; one still running keeps the next one
waiting; two waiters for a released project proceed one after the other, in arrival order. No
reconciler runs here: the waiter itself finds the closed holder."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from db.models.agent import AgentTask
from db.models.operations import AuditLog
from db.models.pipelines import PipelineRun
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.statuses.agent import TERMINAL_TASK_STATUSES
from tests.agent.support import agent_worker, make_project
from tests.agent.verify_repos import NO_SCAN, WAITS, node_repo
from tests.factories import make_org
from tests.runs.helpers import pipeline_worker, wait_for
from tests.runs.sandbox import sandbox_runner
from workflows.agent_models import AgentTaskWorkflowInput
from workflows.agent_task import AgentTaskWorkflow
from workflows.contracts.agent import PREPARE_VERIFICATION

pytestmark = pytest.mark.timeout(300)
WAITING = "earlier verification"


class Project:
    """A project whose generated pipeline's test stage runs until its run is cancelled, and the
    generations with verification started on it."""

    def __init__(
        self, client: Client, session_maker: async_sessionmaker[AsyncSession], queue: str
    ) -> None:
        self.client, self.session_maker, self.queue = client, session_maker, queue
        self.org_id = self.project_id = uuid.uuid4()
        self.handles: list[WorkflowHandle[Any, Any]] = []

    async def create(self, repo: Path) -> None:
        self.org_id = (await make_org(self.session_maker)).org_id
        self.project_id = await make_project(self.session_maker, self.org_id, str(repo))

    async def add_task(self) -> uuid.UUID:
        task_id = uuid.uuid4()
        async with session_scope(self.session_maker) as session:
            session.add(
                AgentTask(
                    id=task_id,
                    organization_id=self.org_id,
                    project_id=self.project_id,
                    task_type="generate_pipeline",
                    input_data={"preferences": NO_SCAN, "verify": True},
                    workflow_id=f"agent-task-{task_id}",
                )
            )
        return task_id

    async def start(self, task_id: uuid.UUID) -> WorkflowHandle[Any, Any]:
        handle = await self.client.start_workflow(
            AgentTaskWorkflow.run,
            AgentTaskWorkflowInput(
                task_id=task_id,
                organization_id=self.org_id,
                project_id=self.project_id,
                task_type="generate_pipeline",
                verify=True,
                verification_task_queue=f"{self.queue}-runs",
            ),
            id=f"agent-task-{task_id}",
            task_queue=self.queue,
        )
        self.handles.append(handle)
        return handle

    async def runs(self, task_id: uuid.UUID) -> list[PipelineRun]:
        async with self.session_maker() as session:
            rows = await session.scalars(
                select(PipelineRun)
                .where(PipelineRun.metadata_.contains({"verification_task_id": str(task_id)}))
                .order_by(PipelineRun.created_at)
            )
            return list(rows)

    async def running(self, task_id: uuid.UUID) -> None:
        """Until the task's verification run is under way."""

        async def under_way() -> bool:
            return any(r.status == "running" for r in await self.runs(task_id))

        await wait_for(under_way, timeout=180, interval=0.3)

    async def task(self, task_id: uuid.UUID) -> AgentTask:
        async with self.session_maker() as session:
            task = await session.get(AgentTask, task_id)
            assert task is not None
            return task


@pytest.fixture
async def project(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    tmp_path: Path,
) -> AsyncIterator[Project]:
    """The agent worker and a sandbox pipeline worker; every task's workflow ends with the test."""
    runner = sandbox_runner(tmp_path / "runner-state")
    proj = Project(temporal_client, session_maker, task_queue)
    await proj.create(node_repo(tmp_path / "repo", WAITS))
    try:
        async with (
            agent_worker(temporal_client, settings, session_maker, task_queue),
            pipeline_worker(temporal_client, f"{task_queue}-runs", settings, session_maker, runner),
        ):
            yield proj
            for handle in proj.handles:
                with contextlib.suppress(RPCError):  # already closed
                    await handle.terminate("test over")
    finally:
        await runner.close()


async def waiting_attempt(handle: WorkflowHandle[Any, Any]) -> int:
    """The attempt the task's first verification run is at while it waits for its turn (0 when
    it is not waiting)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if WAITING in pending.last_failure.message:
            return pending.attempt
    return 0


async def prepared_at(handle: WorkflowHandle[Any, Any]) -> int:
    """The attempt at which the first verification run was prepared (from the history)."""
    scheduled: set[int] = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name == PREPARE_VERIFICATION.name:
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes = event.activity_task_started_event_attributes
            if attributes.scheduled_event_id in scheduled:
                return attributes.attempt
    raise AssertionError("no verification run was prepared")


async def waits(handle: WorkflowHandle[Any, Any], beyond: int) -> None:
    async def waited() -> bool:
        return await waiting_attempt(handle) > beyond

    await wait_for(waited, timeout=120, interval=0.3)


async def reconciled(session_maker: async_sessionmaker[AsyncSession], task_id: uuid.UUID) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.resource_id == task_id, AuditLog.action == "agent_task.reconciled")
        )
        return count or 0


async def assert_closed_as_terminated(project: Project, task_id: uuid.UUID) -> None:
    task = await project.task(task_id)
    assert task.status in TERMINAL_TASK_STATUSES, task.status
    assert task.error is not None and "terminated" in task.error
    assert task.completed_at is not None
    assert await reconciled(project.session_maker, task_id) == 1

    async def run_stopped() -> bool:
        return all(r.status == "cancelled" for r in await project.runs(task_id))

    # Its verification run was cancelled with it (the child's parent-close policy).
    await wait_for(run_stopped, timeout=60, interval=0.3)


async def test_a_terminated_verification_releases_the_project_at_once(project: Project) -> None:
    first = await project.add_task()
    first_handle = await project.start(first)
    await project.running(first)
    await first_handle.terminate("stuck, stopped by an operator")
    second = await project.add_task()
    second_handle = await project.start(second)
    await project.running(second)
    # The first try found the holder's workflow closed (one more is allowed for a lost worker).
    assert await prepared_at(second_handle) <= 2
    await assert_closed_as_terminated(project, first)


async def test_a_running_verification_keeps_the_next_one_waiting(project: Project) -> None:
    first = await project.add_task()
    first_handle = await project.start(first)
    await project.running(first)
    second = await project.add_task()
    second_handle = await project.start(second)
    await waits(second_handle, beyond=3)
    # Tried again and again against a live holder: no run of its own, the holder untouched.
    assert await project.runs(second) == []
    assert (await project.task(first)).status == "running"
    assert [r.status for r in await project.runs(first)] == ["running"]
    await first_handle.terminate("stopped by an operator while another waits")
    at = await waiting_attempt(second_handle)
    await project.running(second)
    # The attempt in flight at the termination, or the next one.
    assert await prepared_at(second_handle) <= at + 1
    await assert_closed_as_terminated(project, first)


async def test_two_waiters_for_a_released_project_take_turns(project: Project) -> None:
    first = await project.add_task()
    first_handle = await project.start(first)
    await project.running(first)
    second, third = await project.add_task(), await project.add_task()
    second_handle, third_handle = await project.start(second), await project.start(third)
    await waits(second_handle, beyond=1)
    await waits(third_handle, beyond=1)
    await first_handle.terminate("stopped by an operator while two wait")
    await project.running(second)
    # The later waiter tried again since the earlier one took the turn, and still waits.
    await waits(third_handle, beyond=await waiting_attempt(third_handle) + 1)
    assert await project.runs(third) == []
    assert (await project.task(second)).status == "running"
    # Both waiters found the first holder closed; its row was closed once.
    await assert_closed_as_terminated(project, first)
    await second_handle.terminate("stopped by an operator")
    await project.running(third)
    await assert_closed_as_terminated(project, second)
