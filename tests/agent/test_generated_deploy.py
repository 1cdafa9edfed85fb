"""The generated deploy stage: Forgeline-native inside Forgeline, an API call in exported CI."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.tools import pin_deploy_environment
from db.models.agent import AgentTask
from db.models.pipelines import Pipeline, PipelineStage
from db.models.projects import Environment
from db.session import session_scope
from forgeline.pipeline_validation import validate_proposal
from forgeline.safe_parsing import load_yaml
from forgeline.settings import AGENT_TASK_QUEUE
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import agent_worker, make_project
from tests.factories import make_org
from tests.runs.helpers import by_stage, create_run, executions, log_text, pipeline_worker, start
from tests.runs.sandbox import sandbox_runner
from workflows.agent_models import Preferences

pytestmark = pytest.mark.timeout(120)
STATIC = next(s for s in CORPUS if s.name == "static-html")
API_CALL = "/v1/environments/$FORGELINE_ENVIRONMENT_ID/deployments"
BODY = '{\\"commit_sha\\": \\"$COMMIT_SHA\\", \\"branch\\": \\"$COMMIT_BRANCH\\"}'


@pytest.fixture(scope="module")
def static_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(STATIC, tmp_path_factory.mktemp("deploy-corpus"), git=True)


def _deploy_jobs(report_gha: str, report_gitlab: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return load_yaml(report_gha)["jobs"]["deploy"], load_yaml(report_gitlab)["deploy"]


def test_static_site_without_environment_deploys_nothing_inside_forgeline(
    static_repo: Path,
) -> None:
    proposal = propose_pipeline(analyze_repository(static_repo), Preferences())
    deploy = proposal.stages[-1]
    assert deploy.stage_type == "deploy"
    assert deploy.conditions["branch"] == ["main"]
    assert "deploy_environment_id" not in deploy.conditions
    # A labelled no-op: no API credentials, no curl, nothing that can fail the run.
    assert deploy.commands[0].startswith('echo "No deploy environment chosen')
    assert "curl" not in deploy.commands[0] and "FORGELINE_TOKEN" not in deploy.commands[0]

    report = validate_proposal(proposal)
    assert report.valid, report.errors
    assert report.github_actions_yaml and report.gitlab_ci_yaml
    gha, gitlab = _deploy_jobs(report.github_actions_yaml, report.gitlab_ci_yaml)
    [step] = [s for s in gha["steps"] if "run" in s]
    assert API_CALL in step["run"] and "Authorization: Bearer $FORGELINE_TOKEN" in step["run"]
    assert BODY in step["run"]
    assert gha["env"]["FORGELINE_TOKEN"] == "${{ secrets.FORGELINE_TOKEN }}"
    assert gha["env"]["FORGELINE_ENVIRONMENT_ID"] == "${{ vars.FORGELINE_ENVIRONMENT_ID }}"
    assert gha["env"]["COMMIT_SHA"] == "${{ github.sha }}"
    assert gha["env"]["COMMIT_BRANCH"] == "${{ github.ref_name }}"
    assert "refs/heads/main" in gha["if"]
    assert API_CALL in gitlab["script"][-1] and BODY in gitlab["script"][-1]
    # The token is a masked CI/CD variable, never written into the YAML.
    assert "FORGELINE_TOKEN" not in (gitlab.get("variables") or {})
    assert gitlab["variables"]["COMMIT_BRANCH"] == "$CI_COMMIT_REF_NAME"
    assert gitlab["image"] == {"name": "curlimages/curl:8.10.1", "entrypoint": [""]}


def test_static_site_with_environment_starts_a_forgeline_deployment(static_repo: Path) -> None:
    env_id = uuid.uuid4()
    prefs = Preferences(deploy_environment_id=env_id, deploy_environment_name='prod "$(rm)"')
    proposal = propose_pipeline(analyze_repository(static_repo), prefs)
    deploy = proposal.stages[-1]
    assert deploy.stage_type == "deploy"
    assert deploy.conditions["deploy_environment_id"] == str(env_id)
    assert deploy.conditions["branch"] == ["main"]
    # The runner gives the commit as FORGELINE_COMMIT_SHA; the name cannot break the quoting.
    assert deploy.commands == [
        'echo "Deploying $FORGELINE_COMMIT_SHA to prod -rm- through Forgeline"'
    ]
    report = validate_proposal(proposal)
    assert report.valid, report.errors
    assert report.github_actions_yaml and report.gitlab_ci_yaml
    gha, gitlab = _deploy_jobs(report.github_actions_yaml, report.gitlab_ci_yaml)
    assert gha["env"]["FORGELINE_ENVIRONMENT_ID"] == str(env_id)
    assert gitlab["variables"]["FORGELINE_ENVIRONMENT_ID"] == str(env_id)


async def _environment(session_maker, project_id: uuid.UUID, name: str) -> uuid.UUID:
    env_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Environment(
                id=env_id,
                project_id=project_id,
                name=name,
                env_type="production",
                provider="static",
            )
        )
    return env_id


async def _stages(session_maker, project_id: uuid.UUID) -> dict[str, PipelineStage]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(PipelineStage)
            .join(Pipeline, Pipeline.id == PipelineStage.pipeline_id)
            .where(Pipeline.project_id == project_id)
        )
        return {s.name: s for s in rows}


async def test_api_checks_the_environment_and_the_planner_uses_it(
    api_client, temporal_client, settings, session_maker, static_repo
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(static_repo))
    other_project = await make_project(session_maker, org.org_id, str(static_repo))
    foreign_env = await _environment(session_maker, other_project, "elsewhere")
    own_env = await _environment(session_maker, project_id, "production")

    for env_id, status in ((foreign_env, 404), (uuid.uuid4(), 404), ("not-a-uuid", 422)):
        resp = await api_client.post(
            f"/v1/projects/{project_id}/agent-tasks",
            json={
                "task_type": "generate_pipeline",
                "input_data": {"preferences": {"deploy_environment_id": str(env_id)}},
            },
            headers=org.headers,
        )
        assert resp.status_code == status, resp.text
    async with session_maker() as session:
        count = await session.scalar(select(func.count()).where(AgentTask.project_id == project_id))
    assert count == 0

    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={
            "task_type": "generate_pipeline",
            "input_data": {
                "branch": "main",
                "preferences": {
                    "deploy_environment_id": str(own_env),
                    "deploy_environment_name": "spoofed",
                },
            },
        },
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    task = resp.json()
    assert task["input_data"]["preferences"]["deploy_environment_name"] == "production"
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        await temporal_client.get_workflow_handle(task["workflow_id"]).result()
    deploy = (await _stages(session_maker, project_id))["deploy"]
    assert deploy.stage_type == "deploy"
    assert deploy.conditions["deploy_environment_id"] == str(own_env)
    assert deploy.commands[0]["run"] == (
        'echo "Deploying $FORGELINE_COMMIT_SHA to production through Forgeline"'
    )


async def test_generated_pipeline_runs_green_on_main_without_environment(
    api_client, temporal_client, settings, session_maker, task_queue, static_repo, tmp_path
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(static_repo))
    # Lint is left out: `npx html-validate` needs the npm registry, which tests do not reach.
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={
            "task_type": "generate_pipeline",
            "input_data": {"branch": "main", "preferences": {"include_lint": False}},
        },
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        await temporal_client.get_workflow_handle(resp.json()["workflow_id"]).result()
    stages = await _stages(session_maker, project_id)
    assert stages["deploy"].stage_type == "deploy"
    pipeline_id = stages["deploy"].pipeline_id

    run = await create_run(
        session_maker, settings, org.org_id, pipeline_id, trigger="manual", branch="main"
    )
    runner = sandbox_runner(tmp_path / "runner-state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handle = await start(temporal_client, run, task_queue)
        result = await handle.result()
    assert result.status == "success"
    rows = by_stage(await executions(session_maker, run.id))
    [deploy] = rows["deploy"]
    assert deploy.status == "success" and deploy.exit_code == 0
    assert "No deploy environment chosen" in await log_text(session_maker, deploy.id)


def test_model_written_pipeline_deploys_only_to_the_chosen_environment(static_repo: Path) -> None:
    proposal = propose_pipeline(analyze_repository(static_repo), Preferences())
    foreign = str(uuid.uuid4())
    stages = [
        s.model_copy(update={"conditions": {**s.conditions, "deploy_environment_id": foreign}})
        for s in proposal.stages
    ]
    hostile = proposal.model_copy(update={"stages": stages})
    assert all(
        "deploy_environment_id" not in s.conditions
        for s in pin_deploy_environment(hostile, Preferences()).stages
    )
    chosen = uuid.uuid4()
    pinned = pin_deploy_environment(hostile, Preferences(deploy_environment_id=chosen))
    assert {s.name: s.conditions.get("deploy_environment_id") for s in pinned.stages} == {
        "lint": None,
        "deploy": str(chosen),
    }
