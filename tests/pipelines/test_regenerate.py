"""Regenerating a pipeline with the agent makes its next version, never a second pipeline of the
same name; two generations at once still leave one pipeline; a retried save writes nothing twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.agent.generated_pipelines import save_generated
from db.models.agent import AgentTask
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Pipeline
from db.session import session_scope
from forgeline.pipeline_spec import PipelineProposal, ValidationReport
from forgeline.settings import AGENT_TASK_QUEUE
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import agent_worker, make_project
from tests.factories import make_org
from tests.pipelines.support import ACCEPT_YAML, YAML, headers

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = next(s for s in CORPUS if s.name == "go-service")
    return write_repo(spec, tmp_path_factory.mktemp("regen"), git=True)


async def _generate(api_client, org, project_id) -> dict[str, Any]:
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={"task_type": "generate_pipeline", "input_data": {"branch": "main"}},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


async def test_regenerating_makes_the_next_version(
    api_client, temporal_client, settings, session_maker, repo
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        first = await _generate(api_client, org, project_id)
        await temporal_client.get_workflow_handle(first["workflow_id"]).result()
        listed = await api_client.get(f"/v1/projects/{project_id}/pipelines", headers=org.headers)
        [pipeline] = listed.json()["items"]
        url = f"/v1/pipelines/{pipeline['id']}"
        generated = await api_client.get(url, headers=headers(org, **ACCEPT_YAML))
        # A person edits it; then it is generated again (twice at once).
        edited = generated.text.replace("timeout_seconds: ", "timeout_seconds: 1", 1)
        put = await api_client.put(url, content=edited, headers=headers(org, **YAML))
        assert put.status_code == 200, put.text
        again = [await _generate(api_client, org, project_id) for _ in range(2)]
        await asyncio.gather(
            *(temporal_client.get_workflow_handle(t["workflow_id"]).result() for t in again)
        )

    listed = await api_client.get(f"/v1/projects/{project_id}/pipelines", headers=org.headers)
    assert [p["id"] for p in listed.json()["items"]] == [pipeline["id"]]
    versions = (await api_client.get(f"{url}/versions", headers=org.headers)).json()["items"]
    assert [(v["version"], v["change"]) for v in versions] == [
        (4, "regenerate"),
        (3, "regenerate"),
        (2, "update"),
        (1, "create"),
    ]
    assert versions[-1]["agent_task_id"] == first["id"]
    assert {versions[0]["agent_task_id"], versions[1]["agent_task_id"]} == {t["id"] for t in again}
    for task in again:
        detail = (await api_client.get(f"/v1/agent-tasks/{task['id']}", headers=org.headers)).json()
        assert (
            detail["status"] == "completed"
            and detail["output_data"]["pipeline_id"] == pipeline["id"]
        )
    # The regenerated definition replaced the edit; the export is the generator's validated one.
    current = await api_client.get(url, headers=headers(org, **ACCEPT_YAML))
    assert current.text == generated.text and current.headers["ETag"] == '"4"'
    diff = (await api_client.get(f"{url}/diff?from=2&to=3", headers=org.headers)).json()
    assert diff["diff"].count("\n-  timeout_seconds: 1") == 1
    export = await api_client.get(f"{url}/export", headers=org.headers)
    assert export.status_code == 200 and "jobs:" in export.text


async def test_a_retried_save_writes_nothing_twice(session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    proposal = PipelineProposal.model_validate(
        {"name": "ci", "stages": [{"name": "test", "stage_type": "test", "commands": ["true"]}]}
    )
    report = ValidationReport(valid=True)
    async with session_scope(session_maker) as session:
        tasks = [
            AgentTask(
                organization_id=org.org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                created_by_user_id=org.user_id,
            )
            for _ in range(2)
        ]
        session.add_all(tasks)
    ids = []
    for task in [tasks[0], tasks[0], tasks[1], tasks[1]]:
        async with session_scope(session_maker) as session:
            ids.append(
                await save_generated(
                    session, task=task, proposal=proposal, report=report, config={}
                )
            )
    # A model's proposal with triggers that do not validate: regenerated, starting on no event.
    odd = proposal.model_copy(update={"triggers": {"on_push": {"branches": "main"}, "x": 1}})
    async with session_scope(session_maker) as session:
        third = AgentTask(
            organization_id=org.org_id,
            project_id=project_id,
            task_type="generate_pipeline",
            created_by_user_id=org.user_id,
        )
        session.add(third)
    async with session_scope(session_maker) as session:
        ids.append(
            await save_generated(session, task=third, proposal=odd, report=report, config={})
        )
    assert len(set(ids)) == 1
    async with session_maker() as session:
        rows = (
            await session.execute(
                select(PipelineVersion.version, PipelineVersion.change).where(
                    PipelineVersion.pipeline_id == ids[0]
                )
            )
        ).all()
    assert sorted(rows) == [(1, "create"), (2, "regenerate"), (3, "regenerate")]
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, ids[0])
    assert pipeline is not None and "on_push" not in pipeline.triggers
