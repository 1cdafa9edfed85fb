"""SIGKILL the worker in the middle of the agent loop: the task completes on a new worker with no
duplicated steps, tool invocations, usage records or pipelines."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models.agent import AgentExecution, AgentStep, AgentTask, ToolInvocation
from db.models.billing import UsageRecord
from db.session import session_scope
from tests.agent import fake_anthropic
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import counts, make_project
from tests.conftest import ROOT
from tests.factories import make_org
from workflows.agent_models import AgentTaskWorkflowInput
from workflows.agent_task import AgentTaskWorkflow

pytestmark = pytest.mark.timeout(180)


def _start_worker(
    settings, task_queue: str, llm_url: str, gate: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "test",
        "FORGELINE_DATABASE_URL": settings.database_url,
        "FORGELINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "FORGELINE_STORAGE_DIR": str(settings.objects_dir),
        "FORGELINE_ALLOW_LOCAL_REPOSITORIES": "true",
        "FORGELINE_ANTHROPIC_API_KEY": "test-key",
        "FORGELINE_ANTHROPIC_MODEL": "claude-sonnet-4-6",
        "FORGELINE_ANTHROPIC_BASE_URL": llm_url,
        "FORGELINE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent.worker_proc", task_queue]
        + ([str(gate)] if gate else []),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _steps(session_maker, task_id) -> int:
    async with session_maker() as session:
        execs = select(AgentExecution.id).where(AgentExecution.task_id == task_id)
        count: int = (
            await session.execute(select(func.count()).where(AgentStep.execution_id.in_(execs)))
        ).scalar_one()
        return count


async def test_kill_worker_mid_loop(temporal_client, settings, session_maker, task_queue, tmp_path):
    sample = next(s for s in CORPUS if s.name == "nextjs-npm")
    repo = write_repo(sample, tmp_path, git=True)
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    task_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org.org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                input_data={},
            )
        )
    script = fake_anthropic.generation_script(delay=1.0)
    with fake_anthropic.serve(script) as url:
        gate = tmp_path / "go"
        first = _start_worker(settings, task_queue, url)
        # The stand-by worker boots now (imports are slow on a loaded machine) but polls only
        # once the first one is dead.
        second = _start_worker(settings, task_queue, url, gate)
        try:
            handle = await temporal_client.start_workflow(
                AgentTaskWorkflow.run,
                AgentTaskWorkflowInput(
                    task_id=task_id,
                    organization_id=org.org_id,
                    project_id=project_id,
                    task_type="generate_pipeline",
                    heartbeat_timeout_seconds=3,
                ),
                id=f"agent-task-{task_id}",
                task_queue=task_queue,
                task_timeout=timedelta(seconds=3),
            )
            for _ in range(1200):
                if await _steps(session_maker, task_id) >= 2:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the agent loop never reached step 2")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            gate.touch()
            result = await asyncio.wait_for(handle.result(), timeout=150)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
    assert result.status == "completed", result.error
    n = await counts(session_maker, task_id)
    assert n == {"executions": 1, "steps": 5, "tools": 7, "pipelines": 1}
    async with session_maker() as session:
        keys = (
            (
                await session.execute(
                    select(ToolInvocation.invocation_key).where(
                        ToolInvocation.execution_id.in_(
                            select(AgentExecution.id).where(AgentExecution.task_id == task_id)
                        )
                    )
                )
            )
            .scalars()
            .all()
        )
        usage = (
            await session.execute(
                select(func.count()).where(UsageRecord.organization_id == org.org_id)
            )
        ).scalar_one()
        task = await session.get(AgentTask, task_id)
    assert len(set(keys)) == 7
    assert usage == 5
    assert task is not None and task.status == "completed" and task.tokens_used == 750
