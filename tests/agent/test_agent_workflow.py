"""AgentTaskWorkflow on a real Temporal dev server and Postgres: planner and LLM paths."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from temporalio.client import Client
from temporalio.worker import Replayer

from db.models.agent import AgentExecution, AgentStep, AgentTask, ToolInvocation
from db.models.billing import UsageRecord
from db.models.pipelines import Pipeline, PipelineStage
from db.models.projects import Project, ProjectFile
from db.session import session_scope
from forgeline.pipeline_validation import validate_yaml
from tests.agent import fake_anthropic
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import agent_worker, counts, make_project, task_row
from tests.factories import make_org
from workflows.agent_models import AgentTaskWorkflowInput, AgentTaskWorkflowOutput
from workflows.agent_task import AgentTaskWorkflow

pytestmark = pytest.mark.timeout(120)
BY_NAME = {s.name: s for s in CORPUS}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("git-corpus")
    names = ("nextjs-npm", "fastapi-uv", "monorepo-workspaces")
    return {n: write_repo(BY_NAME[n], root, git=True) for n in names}


async def _task(
    session_maker: Any,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    task_type: str = "generate_pipeline",
    token_budget: int | None = None,
    **input_data: Any,
) -> uuid.UUID:
    task_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org_id,
                project_id=project_id,
                task_type=task_type,
                input_data=input_data,
                token_budget=token_budget,
                workflow_id=f"agent-task-{task_id}",
            )
        )
    return task_id


async def _run(
    client: Client,
    task_queue: str,
    org_id,
    project_id,
    task_id,
    task_type="generate_pipeline",
    **extra,
) -> AgentTaskWorkflowOutput:
    return await client.execute_workflow(
        AgentTaskWorkflow.run,
        AgentTaskWorkflowInput(
            task_id=task_id,
            organization_id=org_id,
            project_id=project_id,
            task_type=task_type,
            **extra,
        ),
        id=f"agent-task-{task_id}",
        task_queue=task_queue,
    )


async def test_planner_generates_validated_pipeline(
    temporal_client, settings, session_maker, task_queue, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["nextjs-npm"]))
    task_id = await _task(session_maker, org.org_id, project_id)
    async with agent_worker(temporal_client, settings, session_maker, task_queue):
        result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id)
    assert result.status == "completed", result.error
    assert result.output["detected_framework"] == "nextjs"
    task = await task_row(session_maker, task_id)
    assert task.status == "completed" and task.output_data
    pipeline_id = uuid.UUID(task.output_data["pipeline_id"])
    n = await counts(session_maker, task_id)
    # list, read, detect, propose, validate: five planner steps, one tool call each but reads.
    assert n["executions"] == 1 and n["steps"] == 5 and n["pipelines"] == 1
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None and pipeline.organization_id == org.org_id
        stages = (
            (
                await session.execute(
                    select(PipelineStage)
                    .where(PipelineStage.pipeline_id == pipeline_id)
                    .order_by(PipelineStage.position)
                )
            )
            .scalars()
            .all()
        )
        execution = (
            await session.execute(select(AgentExecution).where(AgentExecution.task_id == task_id))
        ).scalar_one()
        files = (
            await session.execute(select(func.count()).where(ProjectFile.project_id == project_id))
        ).scalar_one()
    assert [s.stage_type for s in stages] == [
        "install",
        "lint",
        "test",
        "build",
        "security_scan",
        "deploy",
    ]
    assert stages[0].commands == [{"name": "npm ci", "run": "npm ci"}]
    assert execution.provider == "planner" and execution.status == "completed"
    assert files == 3
    async with session_maker() as session:
        project = await session.get(Project, project_id)
    assert project is not None and project.framework == "nextjs"
    assert validate_yaml(pipeline.github_actions_yaml or "", "github-actions") == []
    assert validate_yaml(pipeline.gitlab_ci_yaml or "", "gitlab-ci") == []
    assert yaml.safe_load(pipeline.gitlab_ci_yaml or "")["build"]["artifacts"]["paths"] == [".next"]
    # Workspace is scratch: removed when the task finishes.
    assert not (settings.workspaces_dir / "agent" / str(task_id)).exists()
    # The recorded history replays deterministically against the current workflow code.
    history = await temporal_client.get_workflow_handle(f"agent-task-{task_id}").fetch_history()
    # With the client's converter: payloads in the history are encrypted by its codec.
    await Replayer(
        workflows=[AgentTaskWorkflow], data_converter=temporal_client.data_converter
    ).replay_workflow(history)


@pytest.mark.parametrize("task_type", ["analyze_repo", "suggest_improvements", "optimize_config"])
async def test_other_task_types_with_planner(
    task_type, temporal_client, settings, session_maker, task_queue, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["monorepo-workspaces"]))
    task_id = await _task(session_maker, org.org_id, project_id, task_type)
    async with agent_worker(temporal_client, settings, session_maker, task_queue):
        result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id, task_type)
    assert result.status == "completed", result.error
    assert result.output["is_monorepo"] is True
    assert {a["framework"] for a in result.output["apps"]} == {"nextjs", "react-vite"}
    if task_type != "analyze_repo":
        titles = [s["title"] for s in result.output["suggestions"]]
        assert "Adopt a CI pipeline" in titles and "Build apps in parallel" in titles
    if task_type == "optimize_config":
        assert "jobs:" in result.output["github_actions_yaml"]
    assert (await counts(session_maker, task_id))["pipelines"] == 0


async def test_llm_conversation_with_faults(
    temporal_client, settings, session_maker, task_queue, repos
):
    """429 with retry-after, 529 overload and malformed tool calls, through the real SDK."""
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["nextjs-npm"]))
    task_id = await _task(session_maker, org.org_id, project_id)
    script = fake_anthropic.generation_script()
    with fake_anthropic.serve(script) as url:
        async with agent_worker(
            temporal_client, settings, session_maker, task_queue, anthropic_base_url=url
        ):
            result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id)
    assert result.status == "completed", result.error
    assert 429 in script.statuses and 529 in script.statuses
    assert result.output["summary"].startswith("The pipeline is ready")
    # The malformed calls came back to the model as tool errors, not as a crash.
    third = script.requests[-3]["messages"][-1]["content"]
    assert [block["is_error"] for block in third] == [False, True, True]
    task = await task_row(session_maker, task_id)
    assert task.tokens_used == 5 * 150 and task.cost_usd > 0
    async with session_maker() as session:
        execution = (
            await session.execute(select(AgentExecution).where(AgentExecution.task_id == task_id))
        ).scalar_one()
        steps = (
            (await session.execute(select(AgentStep).where(AgentStep.execution_id == execution.id)))
            .scalars()
            .all()
        )
        tools = (
            (
                await session.execute(
                    select(ToolInvocation).where(ToolInvocation.execution_id == execution.id)
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
    assert execution.provider == "anthropic" and execution.input_tokens == 500
    assert len(steps) == 5 and all(s.step_type == "llm_turn" for s in steps)
    assert sorted(t.status for t in tools).count("failed") == 2 and len(tools) == 7
    assert usage == 5
    assert (await counts(session_maker, task_id))["pipelines"] == 1


async def test_token_budget_stops_the_loop_and_planner_finishes(
    temporal_client, settings, session_maker, task_queue, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["nextjs-npm"]))
    task_id = await _task(session_maker, org.org_id, project_id, token_budget=300)
    script = fake_anthropic.generation_script()
    with fake_anthropic.serve(script) as url:
        async with agent_worker(
            temporal_client, settings, session_maker, task_queue, anthropic_base_url=url
        ):
            result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id)
    assert result.status == "completed", result.error
    assert result.output["stop_reason"] == "token_budget"
    assert result.output["tokens_used"] == 300  # two turns of 150, then the budget is spent
    async with session_maker() as session:
        execution = (
            await session.execute(select(AgentExecution).where(AgentExecution.task_id == task_id))
        ).scalar_one()
        steps = (
            (
                await session.execute(
                    select(AgentStep.step_type)
                    .where(AgentStep.execution_id == execution.id)
                    .order_by(AgentStep.step_number)
                )
            )
            .scalars()
            .all()
        )
    # Honest fallback: the planner's propose/validate are recorded as their own step.
    assert steps == ["llm_turn", "llm_turn", "planner_fallback"]
    assert execution.transcript_key and execution.transcript_key.endswith("1-0002.json")
    assert (await counts(session_maker, task_id))["pipelines"] == 1


async def test_llm_rejected_falls_back_to_planner(
    temporal_client, settings, session_maker, task_queue, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["fastapi-uv"]))
    task_id = await _task(session_maker, org.org_id, project_id)
    script = fake_anthropic.Script(turns=[], always_status=401)
    with fake_anthropic.serve(script) as url:
        async with agent_worker(
            temporal_client, settings, session_maker, task_queue, anthropic_base_url=url
        ):
            result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id)
    assert result.status == "completed"
    assert script.statuses == [401]  # non-retryable: asked once
    assert "401" in result.output["llm_fallback_reason"]
    assert result.output["detected_framework"] == "fastapi"
    async with session_maker() as session:
        executions = (
            (
                await session.execute(
                    select(AgentExecution)
                    .where(AgentExecution.task_id == task_id)
                    .order_by(AgentExecution.sequence)
                )
            )
            .scalars()
            .all()
        )
    assert [(e.provider, e.status) for e in executions] == [
        ("anthropic", "failed"),
        ("planner", "completed"),
    ]


async def test_continue_as_new_carries_state(
    temporal_client, settings, session_maker, task_queue, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["fastapi-uv"]))
    task_id = await _task(session_maker, org.org_id, project_id)
    async with agent_worker(temporal_client, settings, session_maker, task_queue):
        result = await _run(
            temporal_client,
            task_queue,
            org.org_id,
            project_id,
            task_id,
            continue_as_new_after_steps=2,
        )
    assert result.status == "completed", result.error
    n = await counts(session_maker, task_id)
    assert n == {"executions": 1, "steps": 5, "tools": n["tools"], "pipelines": 1}
    handle = temporal_client.get_workflow_handle(f"agent-task-{task_id}")
    history = [e async for e in handle.fetch_history_events()]
    assert len(history) < 60  # only the last run's history


async def test_repository_over_limit_fails_clearly(
    temporal_client, settings, session_maker, task_queue, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["nextjs-npm"]))
    task_id = await _task(session_maker, org.org_id, project_id)
    small = settings.model_copy(update={"repo_max_files": 3})
    async with agent_worker(temporal_client, small, session_maker, task_queue):
        result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id)
    assert result.status == "failed"
    assert result.error == "repository has more than 3 files (limit)"
    task = await task_row(session_maker, task_id)
    assert task.status == "failed" and task.error == result.error
    assert await counts(session_maker, task_id) == {
        "executions": 1,
        "steps": 0,
        "tools": 0,
        "pipelines": 0,
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/nonexistent/forgeline/repo", "repository URL refused"),
        ("https://169.254.169.254/org/repo.git", "repository URL refused"),
    ],
)
async def test_unreachable_or_hostile_repository_fails_clearly(
    url, message, temporal_client, settings, session_maker, task_queue
):
    org = await make_org(session_maker)
    provider = "local" if url.startswith("/") else "github"
    project_id = await make_project(session_maker, org.org_id, url, provider=provider)
    task_id = await _task(session_maker, org.org_id, project_id)
    async with agent_worker(temporal_client, settings, session_maker, task_queue):
        result = await _run(temporal_client, task_queue, org.org_id, project_id, task_id)
    assert result.status == "failed" and result.error and result.error.startswith(message)
    assert (await counts(session_maker, task_id))["pipelines"] == 0
