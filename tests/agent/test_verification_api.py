"""A verifying generation through the API: the task's live phase while its verification run is
under way, and a cancel in the middle that cancels the run too and leaves the task cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from db.models.pipelines import PipelineRun, StageExecution
from forgeline.settings import Settings
from tests.agent.support import make_project, verifying_workers
from tests.agent.verify_repos import NO_SCAN, WAITS, node_repo
from tests.factories import make_org
from tests.runs.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def workers(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[None]:
    async with verifying_workers(
        temporal_client, settings, session_maker, tmp_path / "runner-state"
    ):
        yield


async def test_live_phase_then_cancel_mid_verification(
    api_client, temporal_client, session_maker, workers, tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(
        session_maker, org.org_id, str(node_repo(tmp_path / "repo", WAITS))
    )
    body: dict[str, Any] = {
        "task_type": "generate_pipeline",
        "input_data": {"verify": True, "preferences": NO_SCAN},
    }
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks", json=body, headers=org.headers
    )
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["id"]
    seen: dict[str, Any] = {}

    async def verifying() -> bool:
        task = (await api_client.get(f"/v1/agent-tasks/{task_id}", headers=org.headers)).json()
        seen.update(task.get("live") or {})
        return str(seen.get("phase", "")).startswith("verifying (run 1 of 3)")

    await wait_for(verifying, timeout=120)

    async def test_stage_running() -> bool:
        async with session_maker() as session:
            running = await session.scalar(
                select(StageExecution.id)
                .join(PipelineRun, PipelineRun.id == StageExecution.run_id)
                .where(
                    PipelineRun.project_id == project_id,
                    StageExecution.stage_name == "test",
                    StageExecution.status == "running",
                )
            )
            return running is not None

    await wait_for(test_stage_running, timeout=120)
    cancel = await api_client.post(f"/v1/agent-tasks/{task_id}/cancel", headers=org.headers)
    assert cancel.status_code == 202, cancel.text
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(
            temporal_client.get_workflow_handle(f"agent-task-{task_id}").result(), 120
        )
    described = await temporal_client.get_workflow_handle(f"agent-task-{task_id}").describe()
    assert described.status == WorkflowExecutionStatus.CANCELED
    task = (await api_client.get(f"/v1/agent-tasks/{task_id}", headers=org.headers)).json()
    assert task["status"] == "cancelled" and task["live"] is None

    async def run_cancelled() -> bool:
        async with session_maker() as session:
            run = await session.scalar(
                select(PipelineRun).where(PipelineRun.project_id == project_id)
            )
            return run is not None and run.status == "cancelled"

    await wait_for(run_cancelled, timeout=60)
