"""Environments per project: unique names, types, provider configs by schema, protection."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from db.models.operations import AuditLog
from db.models.projects import Environment
from tests.factories import make_org


@pytest.fixture
async def project(api_client, session_maker):
    org = await make_org(session_maker)
    r = await api_client.post(
        "/v1/projects", json={"name": "Env test", "project_type": "api"}, headers=org.headers
    )
    assert r.status_code == 201
    return org, r.json()


def envs_url(project) -> str:
    return f"/v1/projects/{project['id']}/environments"


async def test_create_list_get_update_delete(api_client, session_maker, project) -> None:
    org, proj = project
    body = {
        "name": "production",
        "env_type": "production",
        "provider": "docker",
        "is_protected": True,
        "config": {
            "port": 3000,
            "health_check_path": "/healthz",
            "healthy_threshold": 3,
            "environment_variables": [{"name": "DB_PASSWORD", "value": "hunter2", "secret": True}],
        },
    }
    r = await api_client.post(envs_url(proj), json=body, headers=org.headers)
    assert r.status_code == 201, r.text
    env = r.json()
    assert env["is_protected"] is True and env["required_approvals"] == 1
    assert env["config"]["port"] == 3000 and "hunter2" not in r.text
    assert env["config"]["environment_variables"][0]["value"] == "********"

    staging = await api_client.post(
        envs_url(proj),
        json={"name": "staging", "env_type": "staging", "provider": "static"},
        headers=org.headers,
    )
    assert staging.status_code == 201, staging.text
    listed = (await api_client.get(envs_url(proj), headers=org.headers)).json()
    assert [e["name"] for e in listed["items"]] == ["staging", "production"]
    only_prod = (
        await api_client.get(envs_url(proj) + "?env_type=production", headers=org.headers)
    ).json()
    assert [e["name"] for e in only_prod["items"]] == ["production"]

    one = f"/v1/environments/{env['id']}"
    assert (await api_client.get(one, headers=org.headers)).json()["name"] == "production"
    r = await api_client.patch(one, json={"required_approvals": 2}, headers=org.headers)
    assert r.status_code == 200 and r.json()["required_approvals"] == 2
    # Dropping protection without a count resets approvals.
    r = await api_client.patch(one, json={"is_protected": False}, headers=org.headers)
    assert r.status_code == 200 and r.json()["required_approvals"] == 0
    # Round-tripping the masked config keeps the secret.
    cfg = r.json()["config"]
    cfg["port"] = 8081
    r = await api_client.patch(one, json={"config": cfg}, headers=org.headers)
    assert r.status_code == 200 and r.json()["config"]["port"] == 8081
    async with session_maker() as session:
        stored = await session.get(Environment, uuid.UUID(env["id"]))
        assert stored is not None
        assert "value_encrypted" in stored.config["environment_variables"][0]
        assert "hunter2" not in str(stored.config)

    assert (await api_client.delete(one, headers=org.headers)).status_code == 204
    assert (await api_client.get(one, headers=org.headers)).status_code == 404
    async with session_maker() as session:
        actions = (
            (
                await session.execute(
                    select(AuditLog.action)
                    .where(
                        AuditLog.organization_id == org.org_id,
                        AuditLog.resource_type == "environment",
                    )
                    .order_by(AuditLog.created_at, AuditLog.action)
                )
            )
            .scalars()
            .all()
        )
    assert sorted(actions) == sorted(
        ["environment.created"] * 2 + ["environment.updated"] * 3 + ["environment.deleted"]
    )


async def test_unique_name_per_project(api_client, session_maker, project) -> None:
    org, proj = project
    body = {"name": "preview-1", "env_type": "preview", "provider": "static"}
    assert (
        await api_client.post(envs_url(proj), json=body, headers=org.headers)
    ).status_code == 201
    r = await api_client.post(envs_url(proj), json=body, headers=org.headers)
    assert r.status_code == 409
    other = (
        await api_client.post(
            "/v1/projects", json={"name": "Other", "project_type": "api"}, headers=org.headers
        )
    ).json()
    assert (
        await api_client.post(envs_url(other), json=body, headers=org.headers)
    ).status_code == 201
    # Renaming onto a taken name is a conflict too.
    second = await api_client.post(
        envs_url(proj), json={**body, "name": "preview-2"}, headers=org.headers
    )
    r = await api_client.patch(
        f"/v1/environments/{second.json()['id']}", json={"name": "preview-1"}, headers=org.headers
    )
    assert r.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "env_type": "qa", "provider": "static"},
        {"name": "x", "env_type": "staging", "provider": "heroku"},
        {"name": "Bad Name", "env_type": "staging", "provider": "static"},
        {"name": "x", "env_type": "staging", "provider": "static", "config": {"port": 80}},
        {"name": "x", "env_type": "staging", "provider": "docker", "config": {"port": 0}},
        {"name": "x", "env_type": "staging", "provider": "docker", "config": {"port": "http"}},
        {
            "name": "x",
            "env_type": "staging",
            "provider": "docker",
            "config": {"health_check_path": "no-slash"},
        },
        {"name": "x", "env_type": "staging", "provider": "aws", "config": {}},
        {
            "name": "x",
            "env_type": "staging",
            "provider": "aws",
            "config": {"bucket_name": "Bad_Bucket", "region": "us-east-1"},
        },
        {
            "name": "x",
            "env_type": "staging",
            "provider": "aws",
            "config": {"bucket_name": "192.168.1.1", "region": "us-east-1"},
        },
        {"name": "x", "env_type": "staging", "provider": "static", "required_approvals": 1},
        {"name": "x", "env_type": "staging", "provider": "static", "project_id": str(uuid.uuid4())},
        {"name": "x", "env_type": "staging", "provider": "static", "status": "deleted"},
        {"name": "x", "env_type": "staging", "provider": "static", "required_approvals": -1},
    ],
)
async def test_invalid_environments_are_422(api_client, session_maker, project, body) -> None:
    org, proj = project
    r = await api_client.post(envs_url(proj), json=body, headers=org.headers)
    assert r.status_code == 422, r.text
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Environment)
            .where(Environment.project_id == uuid.UUID(proj["id"]))
        )
    assert count == 0


async def test_aws_config_accepted(api_client, project) -> None:
    org, proj = project
    r = await api_client.post(
        envs_url(proj),
        json={
            "name": "s3",
            "env_type": "production",
            "provider": "aws",
            "config": {"bucket_name": "my-site-prod", "region": "eu-west-1"},
        },
        headers=org.headers,
    )
    assert r.status_code == 201, r.text
    env_id = r.json()["id"]
    # Switching provider needs a config valid for the new one.
    r = await api_client.patch(
        f"/v1/environments/{env_id}", json={"provider": "docker"}, headers=org.headers
    )
    assert r.status_code == 422
    r = await api_client.patch(
        f"/v1/environments/{env_id}",
        json={"provider": "docker", "config": {"port": 8080}},
        headers=org.headers,
    )
    assert r.status_code == 200 and r.json()["provider"] == "docker"


async def test_archived_project_refuses_new_environments(api_client, project) -> None:
    org, proj = project
    await api_client.post(f"/v1/projects/{proj['id']}/archive", headers=org.headers)
    r = await api_client.post(
        envs_url(proj),
        json={"name": "late", "env_type": "staging", "provider": "static"},
        headers=org.headers,
    )
    assert r.status_code == 409


async def test_environment_scopes(api_client, session_maker, project) -> None:
    org, proj = project
    r = await api_client.post(
        envs_url(proj),
        json={"name": "dev", "env_type": "development", "provider": "static"},
        headers=org.headers,
    )
    env_id = r.json()["id"]
    # environments:read alone can read environments but not the project or write.
    reader = await make_org(session_maker, scopes=["environments:read"])
    assert (
        await api_client.get(f"/v1/environments/{env_id}", headers=reader.headers)
    ).status_code == 404  # other org
    # Scope is checked before anything is looked up: no write scope, 403 whatever the id.
    r = await api_client.patch(
        f"/v1/environments/{env_id}", json={"auto_deploy": True}, headers=reader.headers
    )
    assert r.status_code == 403


async def test_environment_with_live_deployment_cannot_be_deleted(
    api_client, session_maker, project
) -> None:
    from db.models.deployments import Deployment
    from db.session import session_scope

    org, proj = project
    env = (
        await api_client.post(
            envs_url(proj),
            json={"name": "live", "env_type": "production", "provider": "static"},
            headers=org.headers,
        )
    ).json()
    deployment_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Deployment(
                id=deployment_id,
                environment_id=uuid.UUID(env["id"]),
                project_id=uuid.UUID(proj["id"]),
                organization_id=org.org_id,
                version="v1",
                status="active",
                provider="static",
            )
        )
    one = f"/v1/environments/{env['id']}"
    assert (await api_client.delete(one, headers=org.headers)).status_code == 409
    async with session_scope(session_maker) as session:
        row = await session.get(Deployment, deployment_id)
        assert row is not None
        row.status = "rolled_back"
    assert (await api_client.delete(one, headers=org.headers)).status_code == 204
