"""POST /v1/agent-tasks/{id}/apply: a task's proposed pipeline becomes the next version of its
project's pipeline (once, also under a concurrent duplicate); another tenant's task is a 404, a
pipeline changed after the task started a 409, a task without a proposal a 409, bad input a 422.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import func, select

from db.models.agent import AgentTask
from db.models.pipeline_versions import PipelineVersion
from db.session import session_scope
from tests.agent.support import make_project
from tests.factories import make_org
from tests.pipelines.support import CANONICAL, YAML, create, headers

PROPOSAL: dict[str, Any] = {
    "name": "optimised",
    "pipeline_type": "full_cicd",
    "framework": "node",
    "triggers": {"on_push": {"branches": ["main"]}},
    "stages": [
        {
            "name": "install",
            "stage_type": "install",
            "image": "node:20",
            "commands": ["npm ci --prefer-offline"],
            "cache_paths": ["~/.npm"],
        },
        {
            "name": "test",
            "stage_type": "test",
            "image": "node:20",
            "commands": ["npm test"],
            "depends_on": ["install"],
        },
    ],
}


async def add_task(
    session_maker: Any,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    task_type: str = "optimize_config",
    status: str = "completed",
    proposal: dict[str, Any] | None = PROPOSAL,
) -> uuid.UUID:
    task_id = uuid.uuid4()
    output: dict[str, Any] = {"proposed_pipeline": proposal} if proposal else {"suggestions": []}
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org_id,
                project_id=project_id,
                task_type=task_type,
                status=status,
                input_data={},
                output_data=output,
                workflow_id=f"agent-task-{task_id}",
            )
        )
    return task_id


async def version_count(session_maker: Any, pipeline_id: uuid.UUID) -> int:
    async with session_maker() as session:
        count: int = await session.scalar(
            select(func.count()).where(PipelineVersion.pipeline_id == pipeline_id)
        )
        return count


async def test_apply_makes_the_next_version_once(api_client, session_maker) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    task_id = await add_task(session_maker, org.org_id, project_id)
    other = await make_org(session_maker)
    hidden = await api_client.post(f"/v1/agent-tasks/{task_id}/apply", headers=other.headers)
    assert hidden.status_code == 404
    # A concurrent duplicate: one version, both answers name it.
    first, second = await asyncio.gather(
        *(
            api_client.post(f"/v1/agent-tasks/{task_id}/apply", headers=org.headers, json={})
            for _ in range(2)
        )
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["version"] == second.json()["version"] == 2
    assert first.json()["change"] == "update" and first.json()["agent_task_id"] == str(task_id)
    assert await version_count(session_maker, pipeline_id) == 2
    detail = (await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)).json()
    assert detail["name"] == "web" and detail["version"] == 2
    assert [s["name"] for s in detail["stages"]] == ["install", "test"]
    assert detail["stages"][0]["commands"][0]["run"] == "npm ci --prefer-offline"
    diff = await api_client.get(
        f"/v1/pipelines/{pipeline_id}/diff", params={"from": 1, "to": 2}, headers=org.headers
    )
    assert diff.status_code == 200 and "npm ci --prefer-offline" in diff.text


async def test_a_pipeline_changed_since_the_proposal_is_a_conflict(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    task_id = await add_task(session_maker, org.org_id, project_id)
    edited = CANONICAL.replace("npm test", "npm run test:ci")
    put = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=edited, headers=headers(org, **YAML)
    )
    assert put.status_code == 200, put.text
    resp = await api_client.post(f"/v1/agent-tasks/{task_id}/apply", headers=org.headers)
    assert resp.status_code == 409 and "changed after the proposal" in resp.text
    assert await version_count(session_maker, pipeline_id) == 2


async def test_nothing_to_apply_and_bad_input(api_client, session_maker) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    cases = {
        "no proposal": await add_task(
            session_maker, org.org_id, project_id, task_type="suggest_improvements", proposal=None
        ),
        "generate": await add_task(
            session_maker, org.org_id, project_id, task_type="generate_pipeline"
        ),
        "running": await add_task(session_maker, org.org_id, project_id, status="running"),
    }
    for name, task_id in cases.items():
        resp = await api_client.post(f"/v1/agent-tasks/{task_id}/apply", headers=org.headers)
        assert resp.status_code == 409, (name, resp.text)
    task_id = await add_task(session_maker, org.org_id, project_id)
    for body in ({"pipeline_id": "../../etc"}, {"pipeline_id": str(pipeline_id), "x": 1}, [1]):
        resp = await api_client.post(
            f"/v1/agent-tasks/{task_id}/apply", headers=org.headers, json=body
        )
        assert resp.status_code == 422, (body, resp.text)
    # Another project's pipeline (same organization) and another tenant's: not found.
    elsewhere = await make_project(session_maker, org.org_id, None)
    foreign = await create(api_client, org, elsewhere)
    other = await make_org(session_maker)
    other_project = await make_project(session_maker, other.org_id, None)
    theirs = await create(api_client, other, other_project)
    for target in (foreign, theirs):
        resp = await api_client.post(
            f"/v1/agent-tasks/{task_id}/apply",
            headers=org.headers,
            json={"pipeline_id": str(target)},
        )
        assert resp.status_code == 404, resp.text
    assert await version_count(session_maker, pipeline_id) == 1
    assert await version_count(session_maker, foreign) == 1
