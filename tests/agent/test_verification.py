"""Verification by running: a generated pipeline run on the repository's commit in the sandbox
runner (child PipelineRunWorkflow, trigger `verification`), repaired when the failure is the
pipeline's fault, reported honestly when it is the repository's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.agent import AgentTask
from db.models.billing import UsageRecord
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage, StageExecution
from db.session import session_scope
from forgeline.settings import Settings
from tests.agent.support import agent_worker, make_project
from tests.agent.verify_repos import FAILS, NEEDS_ENV, NO_SCAN, node_repo
from tests.factories import make_org
from tests.runs.helpers import pipeline_worker
from tests.runs.sandbox import sandbox_runner
from workflows.agent_models import AgentTaskWorkflowInput, AgentTaskWorkflowOutput
from workflows.agent_task import AgentTaskWorkflow

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def workers(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    tmp_path: Path,
) -> AsyncIterator[str]:
    """The agent worker on `task_queue`, a sandbox pipeline worker on its `-runs` queue."""
    runner = sandbox_runner(tmp_path / "runner-state")
    runs_queue = f"{task_queue}-runs"
    async with (
        agent_worker(temporal_client, settings, session_maker, task_queue),
        pipeline_worker(temporal_client, runs_queue, settings, session_maker, runner),
    ):
        yield runs_queue
    await runner.close()


async def generate(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    runs_queue: str,
    repo: Path,
    *,
    attempts: int = 3,
) -> tuple[uuid.UUID, AgentTaskWorkflowOutput]:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    task_id = uuid.uuid4()
    data: dict[str, Any] = {"preferences": NO_SCAN, "verify": True, "verify_attempts": attempts}
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org.org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                input_data=data,
                workflow_id=f"agent-task-{task_id}",
            )
        )
    out = await client.execute_workflow(
        AgentTaskWorkflow.run,
        AgentTaskWorkflowInput(
            task_id=task_id,
            organization_id=org.org_id,
            project_id=project_id,
            task_type="generate_pipeline",
            verify=True,
            verify_attempts=attempts,
            verification_task_queue=runs_queue,
        ),
        id=f"agent-task-{task_id}",
        task_queue=task_queue,
    )
    return task_id, out


async def stored(
    session_maker: async_sessionmaker[AsyncSession], pipeline_id: str
) -> tuple[Pipeline, list[PipelineRun], list[PipelineVersion]]:
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, uuid.UUID(pipeline_id))
        assert pipeline is not None
        runs = list(
            await session.scalars(
                select(PipelineRun)
                .where(PipelineRun.pipeline_id == pipeline.id)
                .order_by(PipelineRun.run_number)
            )
        )
        versions = list(
            await session.scalars(
                select(PipelineVersion)
                .where(PipelineVersion.pipeline_id == pipeline.id)
                .order_by(PipelineVersion.version)
            )
        )
        return pipeline, runs, versions


async def test_a_missing_setup_step_is_repaired_and_the_pipeline_verified(
    temporal_client, session_maker, task_queue, workers, tmp_path
):
    repo = node_repo(tmp_path / "repo", NEEDS_ENV, **{".env.defaults": "GREETING=hello\n"})
    task_id, out = await generate(temporal_client, session_maker, task_queue, workers, repo)
    assert out.status == "completed", out
    verdict = out.output["verification"]
    assert verdict["verified"] is True, verdict
    assert verdict["attempts"] == 2
    assert len(verdict["repairs"]) == 1 and ".env.defaults" in verdict["repairs"][0]
    pipeline, runs, versions = await stored(session_maker, out.output["pipeline_id"])
    assert pipeline.verified is True
    assert pipeline.verified_run_id == runs[-1].id == uuid.UUID(verdict["run_id"])
    assert [r.trigger for r in runs] == ["verification", "verification"]
    assert [r.status for r in runs] == ["failed", "success"]
    # The second run reran from the failed stage: the install stage was reused.
    assert runs[1].reuse_from_run_id == runs[0].id
    assert [v.change for v in versions] == ["create", "repair"]
    assert versions[-1].agent_task_id == task_id
    assert versions[-1].verification is not None and versions[-1].verification["verified"]
    async with session_maker() as session:
        test_stage = await session.scalar(
            select(PipelineStage).where(
                PipelineStage.pipeline_id == pipeline.id, PipelineStage.name == "test"
            )
        )
        assert test_stage is not None
        assert test_stage.commands[0]["run"] == "cp -n .env.defaults .env"
        deploys = list(
            await session.scalars(
                select(StageExecution).where(
                    StageExecution.run_id == runs[-1].id, StageExecution.stage_name == "deploy"
                )
            )
        )
        # Billed as build minutes like any run.
        billed = set(
            await session.scalars(
                select(UsageRecord.idempotency_key).where(
                    UsageRecord.idempotency_key.in_(
                        [f"pipeline-run-{r.id}:build_minutes" for r in runs]
                    )
                )
            )
        )
    assert len(billed) == 2
    assert [d.status for d in deploys] == ["skipped"]
    assert "verification" in (deploys[0].skip_reason or "")


async def test_the_repositorys_own_failing_test_is_reported_not_repaired(
    temporal_client, session_maker, task_queue, workers, tmp_path
):
    repo = node_repo(tmp_path / "repo", FAILS)
    _, out = await generate(temporal_client, session_maker, task_queue, workers, repo)
    verdict = out.output["verification"]
    assert verdict["verified"] is False
    assert verdict["failed_stage"] == "test"
    assert verdict["failure_class"] == "code"
    assert verdict["repairs"] == [] and verdict["attempts"] == 1
    assert any("arithmetic is broken" in line for line in verdict["evidence"]), verdict
    assert "tests fail" in verdict["stop_reason"]
    pipeline, runs, versions = await stored(session_maker, out.output["pipeline_id"])
    assert pipeline.verified is False and pipeline.verified_run_id is None
    assert pipeline.verification is not None and pipeline.verification["failed_stage"] == "test"
    assert len(runs) == 1 and [v.change for v in versions] == ["create"]


async def test_a_spent_attempt_budget_ends_with_the_diagnosis(
    temporal_client, session_maker, task_queue, workers, tmp_path
):
    repo = node_repo(tmp_path / "repo", NEEDS_ENV, **{".env.defaults": "GREETING=hello\n"})
    _, out = await generate(temporal_client, session_maker, task_queue, workers, repo, attempts=1)
    verdict = out.output["verification"]
    assert verdict["verified"] is False
    assert verdict["stop_reason"] == "attempt budget spent"
    assert verdict["failure_class"] == "config"
    assert ".env.defaults" in verdict["diagnosis"]
    pipeline, runs, versions = await stored(session_maker, out.output["pipeline_id"])
    # Nothing was changed that was not run: the stored pipeline is the generated one.
    assert len(runs) == 1 and [v.change for v in versions] == ["create"]
    assert pipeline.verified is False
