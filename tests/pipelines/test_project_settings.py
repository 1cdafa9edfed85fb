"""The project's own build settings feed the generator: its commands and runtime version win
over what the analysis detects (the runner's side, the root directory, is tested with pipeline
files in test_pipeline_as_code.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from db.models.projects import Project
from db.session import session_scope
from forgeline.settings import AGENT_TASK_QUEUE
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import agent_worker, make_project
from tests.factories import make_org

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = next(s for s in CORPUS if s.name == "react-vite-yarn")
    return write_repo(spec, tmp_path_factory.mktemp("settings"), git=True)


async def _generate(api_client, temporal_client, settings, session_maker, org, project_id):
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        resp = await api_client.post(
            f"/v1/projects/{project_id}/agent-tasks",
            json={"task_type": "generate_pipeline", "input_data": {"branch": "main"}},
            headers=org.headers,
        )
        assert resp.status_code == 202, resp.text
        await temporal_client.get_workflow_handle(resp.json()["workflow_id"]).result()
    [pipeline] = (
        await api_client.get(f"/v1/projects/{project_id}/pipelines", headers=org.headers)
    ).json()["items"]
    detail = (await api_client.get(f"/v1/pipelines/{pipeline['id']}", headers=org.headers)).json()
    return detail


async def test_generated_pipeline_uses_the_projects_commands_and_versions(
    api_client, temporal_client, settings, session_maker, repo
):
    org = await make_org(session_maker)
    detected_id = await make_project(session_maker, org.org_id, str(repo))
    detected = await _generate(
        api_client, temporal_client, settings, session_maker, org, detected_id
    )
    detected_runs = [c["run"] for s in detected["stages"] for c in s["commands"]]
    assert "yarn test:ci --coverage" not in detected_runs

    project_id = await make_project(session_maker, org.org_id, str(repo))
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(
                config={
                    "install_command": "yarn install --immutable --check-cache",
                    "test_command": "yarn test:ci --coverage",
                    "build_command": "yarn build --mode production",
                    "node_version": "18.20",
                }
            )
        )
    chosen = await _generate(api_client, temporal_client, settings, session_maker, org, project_id)
    runs = [c["run"] for s in chosen["stages"] for c in s["commands"]]
    assert any("yarn test:ci --coverage" in r for r in runs), runs
    assert any("yarn build --mode production" in r for r in runs), runs
    assert any("yarn install --immutable --check-cache" in r for r in runs), runs
    images = {s["image"] for s in chosen["stages"]} | {chosen["config"].get("default_image")}
    assert any(i and i.startswith("node:18.20") for i in images), images


async def test_a_setting_nothing_reads_is_not_accepted(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    url = f"/v1/projects/{project_id}"
    refused = await api_client.patch(
        url, json={"config": {"start_command": "node server.js"}}, headers=org.headers
    )
    assert refused.status_code == 422
    kept = await api_client.patch(
        url,
        json={"config": {"root_directory": "apps/web", "test_command": "npm test"}},
        headers=org.headers,
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["config"]["root_directory"] == "apps/web"
