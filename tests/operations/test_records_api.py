"""Reads of operational records: workflow executions by entity, infrastructure resources and
project files, each scoped to the caller's organization, with hostile filters refused."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.deployments import InfrastructureResource
from db.models.pipelines import PipelineRun
from db.models.projects import ProjectFile
from db.session import session_scope
from forgeline.settings import Settings
from tests.factories import make_org
from tests.operations.reconcile_support import running_run


async def test_a_runs_executions_are_listed_by_entity_for_its_organization_only(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    run_id, handle = await running_run(temporal_client, session_maker, settings, org)
    await handle.terminate()
    answer = await api_client.get(
        "/v1/workflow-executions", params={"entity": f"run:{run_id}"}, headers=org.headers
    )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(i["workflow_id"], i["resource_type"], i["status"]) for i in items] == [
        (handle.id, "pipeline_run", "running")
    ]
    foreign = await api_client.get(
        "/v1/workflow-executions", params={"entity": f"run:{run_id}"}, headers=other.headers
    )
    assert foreign.status_code == 200 and foreign.json()["items"] == []


async def test_hostile_execution_filters_are_refused(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    for params in (
        {"entity": "run"},
        {"entity": "run:not-a-uuid"},
        {"entity": f"invoice:{uuid.uuid4()}"},
        {"entity": f"run:{uuid.uuid4()}' OR 1=1 --"},
        {"entity": "x" * 500},
        {"status": "exploded"},
        {"kind": "run'; DROP TABLE workflow_executions; --"},
        {"limit": "100000"},
        {"cursor": "garbage"},
    ):
        answer = await api_client.get("/v1/workflow-executions", params=params, headers=org.headers)
        assert answer.status_code in (400, 422), (params, answer.status_code, answer.text)


async def test_resources_and_files_are_read_through_their_organization(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    run_id, handle = await running_run(temporal_client, session_maker, settings, org)
    await handle.terminate()
    async with session_maker() as session:
        run = await session.get(PipelineRun, run_id)
        assert run is not None
        project_id = run.project_id
    async with session_scope(session_maker) as session:
        session.add(
            InfrastructureResource(
                organization_id=org.org_id,
                project_id=project_id,
                provider="aws",
                resource_type="s3_bucket",
                resource_id=f"bucket-{uuid.uuid4().hex}",
                status="active",
            )
        )
        session.add(ProjectFile(project_id=project_id, commit_sha="a" * 40, path="package.json"))
    resources = await api_client.get(
        "/v1/infrastructure-resources", params={"project_id": str(project_id)}, headers=org.headers
    )
    assert resources.status_code == 200, resources.text
    assert [r["resource_type"] for r in resources.json()["items"]] == ["s3_bucket"]
    files = await api_client.get(f"/v1/projects/{project_id}/files", headers=org.headers)
    assert [f["path"] for f in files.json()["items"]] == ["package.json"]
    by_commit = await api_client.get(
        f"/v1/projects/{project_id}/files", params={"commit_sha": "b" * 40}, headers=org.headers
    )
    assert by_commit.json()["items"] == []
    # Another tenant: the project does not exist for it, and its resource list is empty.
    assert (
        await api_client.get(f"/v1/projects/{project_id}/files", headers=other.headers)
    ).status_code == 404
    assert (
        await api_client.get(
            "/v1/infrastructure-resources",
            params={"project_id": str(project_id)},
            headers=other.headers,
        )
    ).status_code == 404
    everything = await api_client.get("/v1/infrastructure-resources", headers=other.headers)
    assert everything.json()["items"] == []
    hostile = await api_client.get(
        f"/v1/projects/{project_id}/files", params={"commit_sha": "../etc"}, headers=org.headers
    )
    assert hostile.status_code == 422
