"""Verification under failure and concurrency: the agent worker SIGKILLed while its verification
run is under way resumes on a new worker without a duplicated run or version; two generations
with verification of one project take their turns, each ending green on its own runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.agent import AgentTask
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import PipelineRun
from db.session import session_scope
from forgeline.settings import Settings
from tests.agent.support import agent_worker, make_project
from tests.agent.verify_repos import NEEDS_ENV, NO_SCAN, node_repo
from tests.conftest import ROOT
from tests.factories import make_org
from tests.runs.helpers import pipeline_worker, wait_for
from tests.runs.sandbox import sandbox_runner
from workflows.agent_models import AgentTaskWorkflowInput, AgentTaskWorkflowOutput
from workflows.agent_task import AgentTaskWorkflow

pytestmark = pytest.mark.timeout(300)
# The test stage takes a moment, so the worker dies while the run is under way.
SLOW_NEEDS_ENV = "setTimeout(() => {\n" + NEEDS_ENV + "}, 1500);\n"
ENV_DEFAULTS = {".env.defaults": "GREETING=hello\n"}


def agent_process(settings: Settings, task_queue: str) -> subprocess.Popen[bytes]:
    env: dict[str, str] = {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "test",
        "FORGELINE_DATABASE_URL": str(settings.database_url),
        "FORGELINE_TEMPORAL_ADDRESS": str(settings.temporal_address),
        "FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "FORGELINE_STORAGE_DIR": str(settings.objects_dir),
        "FORGELINE_ALLOW_LOCAL_REPOSITORIES": "true",
        "FORGELINE_LOG_LEVEL": "WARNING",
    }
    env.pop("FORGELINE_ANTHROPIC_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent.worker_proc", task_queue],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def add_task(
    session_maker: async_sessionmaker[AsyncSession], org_id: uuid.UUID, project_id: uuid.UUID
) -> uuid.UUID:
    task_id = uuid.uuid4()
    data: dict[str, Any] = {"preferences": NO_SCAN, "verify": True}
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                input_data=data,
                workflow_id=f"agent-task-{task_id}",
            )
        )
    return task_id


async def start(
    client: Client,
    task_queue: str,
    runs_queue: str,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    task_id: uuid.UUID,
) -> Any:
    return await client.start_workflow(
        AgentTaskWorkflow.run,
        AgentTaskWorkflowInput(
            task_id=task_id,
            organization_id=org_id,
            project_id=project_id,
            task_type="generate_pipeline",
            verify=True,
            verification_task_queue=runs_queue,
            heartbeat_timeout_seconds=3,
        ),
        id=f"agent-task-{task_id}",
        task_queue=task_queue,
    )


async def runs_of(
    session_maker: async_sessionmaker[AsyncSession], task_id: uuid.UUID
) -> list[PipelineRun]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(PipelineRun)
            .where(PipelineRun.metadata_.contains({"verification_task_id": str(task_id)}))
            .order_by(PipelineRun.created_at)
        )
        return list(rows)


async def test_agent_worker_killed_mid_verification_resumes(
    temporal_client, settings, session_maker, task_queue, tmp_path: Path
) -> None:
    repo = node_repo(tmp_path / "repo", SLOW_NEEDS_ENV, **ENV_DEFAULTS)
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    task_id = await add_task(session_maker, org.org_id, project_id)
    runs_queue = f"{task_queue}-runs"
    runner = sandbox_runner(tmp_path / "runner-state")
    first = agent_process(settings, task_queue)
    try:
        async with pipeline_worker(temporal_client, runs_queue, settings, session_maker, runner):
            handle = await start(
                temporal_client, task_queue, runs_queue, org.org_id, project_id, task_id
            )

            async def verifying() -> bool:
                return bool(await runs_of(session_maker, task_id))

            await wait_for(verifying, timeout=120)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            second = agent_process(settings, task_queue)
            try:
                out = AgentTaskWorkflowOutput.model_validate(await handle.result())
            finally:
                second.kill()
                second.wait()
    finally:
        if first.poll() is None:
            first.kill()
        await runner.close()
    verdict = out.output["verification"]
    assert verdict["verified"] is True, verdict
    runs = await runs_of(session_maker, task_id)
    assert [r.status for r in runs] == ["failed", "success"]
    assert [r.id for r in runs] == [uuid.UUID(r) for r in verdict["runs"]]
    async with session_maker() as session:
        changes = list(
            await session.scalars(
                select(PipelineVersion.change)
                .where(PipelineVersion.agent_task_id == task_id)
                .order_by(PipelineVersion.version)
            )
        )
    assert changes == ["create", "repair"]


async def test_two_verifications_of_one_project_take_turns(
    temporal_client, settings, session_maker, task_queue, tmp_path: Path
) -> None:
    repo = node_repo(tmp_path / "repo", NEEDS_ENV, **ENV_DEFAULTS)
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    first = await add_task(session_maker, org.org_id, project_id)
    second = await add_task(session_maker, org.org_id, project_id)
    runs_queue = f"{task_queue}-runs"
    runner = sandbox_runner(tmp_path / "runner-state")
    try:
        async with (
            agent_worker(temporal_client, settings, session_maker, task_queue),
            pipeline_worker(temporal_client, runs_queue, settings, session_maker, runner),
        ):
            handles = [
                await start(temporal_client, task_queue, runs_queue, org.org_id, project_id, t)
                for t in (second, first)
            ]
            outs = await asyncio.gather(*(h.result() for h in handles))
    finally:
        await runner.close()
    verdicts = [AgentTaskWorkflowOutput.model_validate(o).output["verification"] for o in outs]
    assert all(v["verified"] for v in verdicts), verdicts
    first_runs, second_runs = (
        await runs_of(session_maker, first),
        await runs_of(session_maker, second),
    )
    # The earlier task verified first; the later one started after it had finished.
    assert first_runs[-1].finished_at is not None and second_runs[0].created_at is not None
    assert second_runs[0].created_at > first_runs[-1].finished_at
    # Each verified the version its own runs ran; the regeneration started from the generated
    # document again and was repaired again.
    assert [r.status for r in first_runs] == ["failed", "success"]
    assert [r.status for r in second_runs] == ["failed", "success"]
    async with session_maker() as session:
        changes = list(
            await session.scalars(
                select(PipelineVersion.change)
                .where(PipelineVersion.pipeline_id == first_runs[0].pipeline_id)
                .order_by(PipelineVersion.version)
            )
        )
    assert changes == ["create", "repair", "regenerate", "repair"]
