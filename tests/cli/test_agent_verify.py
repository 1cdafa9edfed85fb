"""`forgeline agent generate --verify` against the real API, agent worker and sandboxed pipeline
worker: a verified pipeline, or an honest diagnosis with its evidence (exit 1); the verification
runs and the verdict in the API, another tenant's pipeline a 404, bad input a 422."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.agent import AgentTask
from forgeline.settings import AGENT_TASK_QUEUE, Settings
from tests.agent.support import agent_worker, make_project
from tests.agent.verify_repos import FAILS, NEEDS_ENV, node_repo
from tests.cli.conftest import invoke
from tests.factories import make_org

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def agent(
    temporal_client: Client, settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[None]:
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        yield


async def test_generate_verify_repairs_and_shows_the_verdict(
    api_url, session_maker, worker, agent, tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    repo = node_repo(tmp_path / "repo", NEEDS_ENV, **{".env.defaults": "GREETING=hello\n"})
    project_id = await make_project(session_maker, org.org_id, str(repo))
    code, out, err = await invoke(
        "agent", "generate", str(project_id), "--verify", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    assert "repaired: test: the stage needs a .env" in out
    assert "verified: run" in out
    async with httpx.AsyncClient(base_url=api_url, headers=org.headers) as api:
        tasks = (await api.get(f"/v1/projects/{project_id}/agent-tasks")).json()["items"]
        verdict = tasks[0]["output_data"]["verification"]
        pipeline_id = tasks[0]["output_data"]["pipeline_id"]
        pipeline = (await api.get(f"/v1/pipelines/{pipeline_id}")).json()
        assert pipeline["verified"] is True and pipeline["verified_run_id"] == verdict["run_id"]
        assert pipeline["verification"]["repairs"] == verdict["repairs"]
        runs = (await api.get(f"/v1/pipelines/{pipeline_id}/runs")).json()["items"]
        assert sorted(r["trigger"] for r in runs) == ["verification", "verification"]
        versions = (await api.get(f"/v1/pipelines/{pipeline_id}/versions")).json()["items"]
        by_number = {v["version"]: v for v in versions}
        assert by_number[2]["change"] == "repair"
        other = await make_org(session_maker)
        hidden = await api.get(f"/v1/pipelines/{pipeline_id}", headers=other.headers)
        assert hidden.status_code == 404


async def test_generate_verify_reports_the_repositorys_failure(
    api_url, session_maker, worker, agent, tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(
        session_maker, org.org_id, str(node_repo(tmp_path / "r", FAILS))
    )
    code, _, err = await invoke(
        "agent", "generate", str(project_id), "--verify", "--api-url", api_url, key=org.api_key
    )
    assert code == 1
    assert "not verified (the repository's own build or tests fail): stage test, code" in err
    assert "arithmetic is broken" in err


async def test_verify_is_refused_where_it_means_nothing(api_url, session_maker, tmp_path) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(
        session_maker, org.org_id, str(node_repo(tmp_path / "r", FAILS))
    )
    async with httpx.AsyncClient(base_url=api_url, headers=org.headers) as api:
        for body in (
            {"task_type": "analyze_repo", "input_data": {"verify": True}},
            {
                "task_type": "generate_pipeline",
                "input_data": {"verify": True, "verify_attempts": 0},
            },
            {"task_type": "generate_pipeline", "input_data": {"verify_attempts": 11}},
            {"task_type": "generate_pipeline", "input_data": {"verify": [1]}},
        ):
            resp = await api.post(f"/v1/projects/{project_id}/agent-tasks", json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert json.loads(resp.text)["detail"]
    async with session_maker() as session:
        written = await session.scalar(
            select(func.count()).where(AgentTask.project_id == project_id)
        )
    assert written == 0
