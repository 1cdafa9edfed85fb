"""Agent tasks and pipelines API: start, read, export, cancel; bad input writes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowExecutionStatus

from db.models.agent import AgentTask
from db.models.operations import WorkflowExecution
from db.models.pipelines import Pipeline, StageExecution, StageLogChunk
from db.session import session_scope
from forgeline.pipeline_validation import validate_yaml
from forgeline.settings import AGENT_TASK_QUEUE
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import add_failed_run, agent_worker, make_project, task_row
from tests.factories import make_org

pytestmark = pytest.mark.timeout(120)
BY_NAME = {s.name: s for s in CORPUS}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-corpus")
    return {n: write_repo(BY_NAME[n], root, git=True) for n in ("react-vite-yarn", "go-service")}


async def _tasks_of(session_maker, project_id) -> int:
    async with session_maker() as session:
        count: int = (
            await session.execute(select(func.count()).where(AgentTask.project_id == project_id))
        ).scalar_one()
        return count


async def _wait(temporal_client, task_id: str) -> None:
    await temporal_client.get_workflow_handle(f"agent-task-{task_id}").result()


async def test_generate_read_and_export(
    api_client, temporal_client, settings, session_maker, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(
        session_maker, org.org_id, str(repos["react-vite-yarn"]), name="Shop front"
    )
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={"task_type": "generate_pipeline", "input_data": {"branch": "main"}},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    task = resp.json()
    assert task["status"] == "pending" and task["workflow_id"] == f"agent-task-{task['id']}"
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        await _wait(temporal_client, task["id"])

    detail = (await api_client.get(f"/v1/agent-tasks/{task['id']}", headers=org.headers)).json()
    assert detail["status"] == "completed"
    assert detail["output_data"]["detected_framework"] == "react-vite"
    assert detail["output_data"]["package_manager"] == "yarn"
    [execution] = detail["executions"]
    assert execution["provider"] == "planner" and len(execution["steps"]) == 5
    assert [s["step_number"] for s in execution["steps"]] == [1, 2, 3, 4, 5]
    assert execution["steps"][0]["tool_invocations"][0]["tool_name"] == "list_files"

    handle = temporal_client.get_workflow_handle(task["workflow_id"])
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    assert (await desc.memo_value("project")) == "Shop front"
    keys = {k.name: v for k, v in desc.typed_search_attributes}
    assert keys["ForgelineOrgId"] == str(org.org_id) and keys["ForgelineKind"] == "agent_task"
    async with session_maker() as session:
        wf = (
            await session.execute(
                select(WorkflowExecution).where(
                    WorkflowExecution.workflow_id == task["workflow_id"]
                )
            )
        ).scalar_one()
    assert wf.status == "completed" and wf.resource_id == uuid.UUID(task["id"])

    listed = (
        await api_client.get(f"/v1/projects/{project_id}/pipelines", headers=org.headers)
    ).json()
    [pipeline] = listed["items"]
    assert pipeline["id"] == detail["output_data"]["pipeline_id"]
    full = (await api_client.get(f"/v1/pipelines/{pipeline['id']}", headers=org.headers)).json()
    assert [s["stage_type"] for s in full["stages"]][:2] == ["install", "lint"]
    for fmt in ("github-actions", "gitlab-ci"):
        exported = await api_client.get(
            f"/v1/pipelines/{pipeline['id']}/export", params={"format": fmt}, headers=org.headers
        )
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("application/yaml")
        assert validate_yaml(exported.text, fmt) == []
    bad = await api_client.get(
        f"/v1/pipelines/{pipeline['id']}/export", params={"format": "circleci"}, headers=org.headers
    )
    assert bad.status_code == 422

    tasks = (
        await api_client.get(
            f"/v1/projects/{project_id}/agent-tasks", params={"limit": 1}, headers=org.headers
        )
    ).json()
    assert [t["id"] for t in tasks["items"]] == [task["id"]]

    again = await api_client.post(f"/v1/agent-tasks/{task['id']}/cancel", headers=org.headers)
    assert again.status_code == 409

    # Another tenant sees none of it.
    other = await make_org(session_maker)
    for path in (
        f"/v1/agent-tasks/{task['id']}",
        f"/v1/pipelines/{pipeline['id']}",
        f"/v1/pipelines/{pipeline['id']}/export",
        f"/v1/projects/{project_id}/pipelines",
        f"/v1/projects/{project_id}/agent-tasks",
    ):
        assert (await api_client.get(path, headers=other.headers)).status_code == 404, path
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={"task_type": "generate_pipeline"},
        headers=other.headers,
    )
    assert resp.status_code == 404
    assert await _tasks_of(session_maker, project_id) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"task_type": "write_poetry"}, 422),
        ({"task_type": "generate_pipeline", "input_data": {"branch": "x", "rm": 1}}, 422),
        ({"task_type": "generate_pipeline", "input_data": {"commit": "not-a-sha"}}, 422),
        ({"task_type": "troubleshoot_failure"}, 422),
        (
            {
                "task_type": "troubleshoot_failure",
                "input_data": {"pipeline_run_id": str(uuid.uuid4())},
            },
            404,
        ),
        ({"task_type": "generate_pipeline", "extra": True}, 422),
    ],
)
async def test_bad_input_writes_nothing(body, status, api_client, session_maker, repos):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["go-service"]))
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks", json=body, headers=org.headers
    )
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert await _tasks_of(session_maker, project_id) == 0


async def test_hostile_or_missing_repository(api_client, session_maker):
    org = await make_org(session_maker)
    no_repo = await make_project(session_maker, org.org_id, None)
    resp = await api_client.post(
        f"/v1/projects/{no_repo}/agent-tasks",
        json={"task_type": "analyze_repo"},
        headers=org.headers,
    )
    assert resp.status_code == 422 and "repository" in resp.json()["detail"]
    put = await api_client.put(
        f"/v1/projects/{no_repo}/repository",
        json={"provider": "github", "url": "https://127.0.0.1/org/repo.git"},
        headers=org.headers,
    )
    assert put.status_code == 422
    # A stored URL that is hostile (written before a rule existed) is refused at start too.
    hostile = await make_project(
        session_maker, org.org_id, "ext::sh -c touch% /tmp/pwned", provider="git"
    )
    resp = await api_client.post(
        f"/v1/projects/{hostile}/agent-tasks",
        json={"task_type": "analyze_repo"},
        headers=org.headers,
    )
    assert resp.status_code == 422, resp.text
    assert await _tasks_of(session_maker, hostile) == 0


async def test_cancel_before_a_worker_picks_it_up(
    api_client, temporal_client, settings, session_maker, repos
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["go-service"]))
    task = (
        await api_client.post(
            f"/v1/projects/{project_id}/agent-tasks",
            json={"task_type": "generate_pipeline"},
            headers=org.headers,
        )
    ).json()
    resp = await api_client.post(f"/v1/agent-tasks/{task['id']}/cancel", headers=org.headers)
    assert resp.status_code == 202
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        handle = temporal_client.get_workflow_handle(task["workflow_id"])
        with pytest.raises(Exception):  # noqa: B017 - WorkflowFailureError(CancelledError)
            await handle.result()
    row = await task_row(session_maker, uuid.UUID(task["id"]))
    assert row.status == "cancelled"
    async with session_maker() as session:
        pipelines = (
            await session.execute(
                select(func.count()).where(Pipeline.generated_by_task_id == row.id)
            )
        ).scalar_one()
    assert pipelines == 0


async def test_troubleshoot_failed_run(api_client, temporal_client, settings, session_maker, repos):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["react-vite-yarn"]))
    async with session_scope(session_maker) as session:
        run_id = await add_failed_run(session, org.org_id, project_id)
        stage = StageExecution(
            id=uuid.uuid4(), run_id=run_id, stage_name="install", status="failed", exit_code=1
        )
        session.add(stage)
        await session.flush()
        session.add(
            StageLogChunk(
                stage_execution_id=stage.id,
                seq=0,
                first_line=0,
                line_count=2,
                content="$ yarn install --frozen-lockfile\nerror Your lockfile needs to be "
                "updated, but yarn was run with `--frozen-lockfile`.\n",
            )
        )
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={"task_type": "troubleshoot_failure", "input_data": {"pipeline_run_id": str(run_id)}},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        await _wait(temporal_client, resp.json()["id"])
    out = (await task_row(session_maker, uuid.UUID(resp.json()["id"]))).output_data or {}
    assert out["failed_stages"] == ["install"]
    assert out["diagnosis"][0]["cause"] == "the lockfile is out of sync with the manifest"
    assert "frozen-lockfile" in out["diagnosis"][0]["evidence"][0]
    assert out["proposed_pipeline"]["stages"][0]["name"] == "install"


async def test_pipeline_plan_limit_refuses_generation(api_client, session_maker, repos):
    """On Free (2 pipelines per project) a third generation is a 402 and writes nothing."""
    from sqlalchemy import delete

    from db.models.billing import Plan, Subscription
    from db.seed import seed_reference_data

    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repos["go-service"]))
    async with session_scope(session_maker) as session:
        await seed_reference_data(session)
        for i in range(2):
            session.add(Pipeline(project_id=project_id, organization_id=org.org_id, name=f"p{i}"))
    try:
        resp = await api_client.post(
            f"/v1/projects/{project_id}/agent-tasks",
            json={"task_type": "generate_pipeline"},
            headers=org.headers,
        )
        analyze = await api_client.post(
            f"/v1/projects/{project_id}/agent-tasks",
            json={"task_type": "analyze_repo"},
            headers=org.headers,
        )
    finally:
        async with session_scope(session_maker) as session:
            await session.execute(delete(Subscription))
            await session.execute(delete(Plan))
    assert resp.status_code == 402, resp.text
    assert resp.json()["limit"] == "pipelines_per_project"
    assert analyze.status_code == 202  # analysis creates no pipeline: not limited
    assert await _tasks_of(session_maker, project_id) == 1
    await api_client.post(f"/v1/agent-tasks/{analyze.json()['id']}/cancel", headers=org.headers)


async def test_task_list_pages_and_refuses_forged_cursors(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    async with session_scope(session_maker) as session:
        for _ in range(3):
            session.add(
                AgentTask(
                    organization_id=org.org_id,
                    project_id=project_id,
                    task_type="analyze_repo",
                    status="completed",
                    input_data={},
                )
            )
    path = f"/v1/projects/{project_id}/agent-tasks"
    first = (await api_client.get(path, params={"limit": 2}, headers=org.headers)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (
        await api_client.get(
            path, params={"limit": 2, "cursor": first["next_cursor"]}, headers=org.headers
        )
    ).json()
    assert len(second["items"]) == 1 and not second.get("next_cursor")
    seen = {t["id"] for t in first["items"]} | {t["id"] for t in second["items"]}
    assert len(seen) == 3
    assert all(t["status"] == "completed" for t in first["items"])
    for forged in ("not-a-cursor", "AAAA", "%00", "x" * 5000):
        resp = await api_client.get(path, params={"cursor": forged}, headers=org.headers)
        assert resp.status_code == 422, forged
