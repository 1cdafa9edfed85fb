"""Deployments API on the real app: trigger → active, detail, explicit rollback (image + config),
approvals with audit, promotion, static site host, soft delete, cross-tenant and bad input."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from core.accounts.scopes import ALL_SCOPES
from db.models.operations import AuditLog
from db.session import session_scope
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE
from infra.deploy_containers import DockerReleaser
from tests.deployments.helpers import (
    make_activities,
    make_environment,
    make_pipeline_run,
    org_sources,
    running_worker,
)
from tests.deployments.images import HEALTHY, write_context
from tests.deployments.proxy import via_proxy
from tests.factories import make_org

TERMINAL = ("active", "failed", "rolled_back", "rejected", "cancelled")


@pytest.fixture
async def worker(docker, settings, session_maker, temporal_client):
    # The API starts workflows on the real deployments queue: serve it for these tests.
    activities = make_activities(settings, session_maker, temporal_client, docker)
    async with running_worker(temporal_client, DEPLOYMENTS_TASK_QUEUE, activities):
        yield


async def wait_api(api_client, headers, dep_id, statuses=TERMINAL, timeout=60):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await api_client.get(f"/v1/deployments/{dep_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in statuses:
            return r.json()
        assert loop.time() < deadline, r.json()["status"]
        await asyncio.sleep(0.15)


async def second_key(session_maker, org, user_id) -> dict[str, str]:
    from core.accounts.keys import insert_api_key

    async with session_scope(session_maker) as session:
        _key, raw = await insert_api_key(
            session,
            organization_id=org.org_id,
            created_by_user_id=user_id,
            name="second",
            scopes=sorted(ALL_SCOPES),
        )
    return {"Authorization": f"Bearer {raw}"}


async def test_deploy_detail_rollback_and_delete(
    api_client, session_maker, settings, worker, docker, tmp_path: Path
):
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    project_id, env_id = await make_environment(session_maker, org.org_id)
    try:
        ids = []
        for version in ("v1", "v2"):
            r = await api_client.post(
                f"/v1/environments/{env_id}/deployments",
                json={
                    "version": version,
                    "source_dir": str(write_context(sources / version, HEALTHY, version)),
                },
                headers=org.headers,
            )
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "pending"
            done = await wait_api(api_client, org.headers, r.json()["id"])
            assert done["status"] == "active", done["error"]
            ids.append(done["id"])
        detail = (await api_client.get(f"/v1/deployments/{ids[1]}", headers=org.headers)).json()
        assert detail["health_checks"] and all(c["ok"] for c in detail["health_checks"])
        assert [c["status"] for c in detail["containers"]] == ["running"]
        assert any(line["source"] == "build" for line in detail["runtime_logs"])
        assert any(line["source"] == "docker" for line in detail["runtime_logs"])
        v1 = (await api_client.get(f"/v1/deployments/{ids[0]}", headers=org.headers)).json()
        assert v1["status"] == "superseded"

        # Explicit rollback of v2: the v1 image is redeployed as a new deployment.
        r = await api_client.post(f"/v1/deployments/{ids[1]}/rollback", headers=org.headers)
        assert r.status_code == 202, r.text
        redeploy = await wait_api(api_client, org.headers, r.json()["id"])
        assert redeploy["status"] == "active" and redeploy["image_ref"] == v1["image_ref"]
        assert redeploy["rollback_of_id"] == ids[1]
        v2 = (await api_client.get(f"/v1/deployments/{ids[1]}", headers=org.headers)).json()
        assert v2["status"] == "rolled_back" and v2["rolled_back_at"]
        assert [
            c.labels["forgeline.deployment_id"] for c in DockerReleaser(docker).managed(str(env_id))
        ] == [redeploy["id"]]

        listed = (
            await api_client.get(
                f"/v1/environments/{env_id}/deployments?limit=2", headers=org.headers
            )
        ).json()
        assert len(listed["items"]) == 2 and listed["next_cursor"]
        by_project = (
            await api_client.get(f"/v1/projects/{project_id}/deployments", headers=org.headers)
        ).json()
        assert {d["id"] for d in by_project["items"]} == {*ids, redeploy["id"]}

        # Soft delete: the active one is refused, a rolled-back one disappears.
        assert (
            await api_client.delete(f"/v1/deployments/{redeploy['id']}", headers=org.headers)
        ).status_code == 409
        assert (
            await api_client.delete(f"/v1/deployments/{ids[1]}", headers=org.headers)
        ).status_code == 204
        assert (
            await api_client.get(f"/v1/deployments/{ids[1]}", headers=org.headers)
        ).status_code == 404

        # Another organization sees none of it.
        other = await make_org(session_maker)
        for method, url in (
            ("get", f"/v1/deployments/{ids[0]}"),
            ("get", f"/v1/environments/{env_id}/deployments"),
            ("get", f"/v1/projects/{project_id}/deployments"),
            ("post", f"/v1/deployments/{ids[0]}/rollback"),
            ("delete", f"/v1/deployments/{ids[0]}"),
        ):
            r = await api_client.request(method, url, headers=other.headers)
            assert r.status_code == 404, (url, r.text)
        r = await api_client.post(
            f"/v1/environments/{env_id}/deployments",
            json={"version": "x", "source_dir": str(tmp_path)},
            headers=other.headers,
        )
        assert r.status_code == 404
    finally:
        DockerReleaser(docker).remove_environment(str(env_id))


async def test_static_site_approval_and_promotion(api_client, session_maker, settings, worker):
    org = await make_org(session_maker, role="admin")
    sources = org_sources(settings, org.org_id)
    owner_headers = await second_key(session_maker, org, org.owner_user_id)
    project_id, staging = await make_environment(session_maker, org.org_id, provider="static")
    _, production = await make_environment(
        session_maker,
        org.org_id,
        provider="static",
        env_type="production",
        protected=True,
        project_id=project_id,
    )
    site = write_context(sources / "site", None, "hello static")
    r = await api_client.post(
        f"/v1/environments/{staging}/deployments",
        json={"version": "1.0.0", "source_dir": str(site), "output_dir": "www"},
        headers=owner_headers,
    )
    assert r.status_code == 202, r.text
    dep = await wait_api(api_client, owner_headers, r.json()["id"])
    assert dep["status"] == "active", dep["error"]
    # The URL the deployment advertises is the site's own host, served by the proxy.
    assert httpx.URL(dep["url"]).host != httpx.URL(settings.public_base_url).host
    url, host = via_proxy(dep["url"], settings.proxy_http_port)
    async with httpx.AsyncClient() as http:
        page = await http.get(url, headers=host)
    assert page.status_code == 200 and "hello static" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    # The API's old path still answers, sandboxed into an opaque origin.
    old = await api_client.get(f"/v1/sites/{dep['id']}/")
    assert old.status_code == 200 and "hello static" in old.text
    assert "sandbox" in old.headers["content-security-policy"]
    assert "allow-same-origin" not in old.headers["content-security-policy"]
    assert (await api_client.get(f"/v1/sites/{dep['id']}/../../etc/passwd")).status_code == 404

    # Promote to the protected production environment: same artifact, waits for approval.
    r = await api_client.post(
        f"/v1/deployments/{dep['id']}/promote",
        json={"target_environment_id": str(production)},
        headers=owner_headers,
    )
    assert r.status_code == 202, r.text
    promoted = await wait_api(api_client, owner_headers, r.json()["id"], ("awaiting_approval",))
    assert promoted["promoted_from_id"] == dep["id"]
    # The owner triggered it: the owner cannot approve; the admin can.
    r = await api_client.post(
        f"/v1/deployments/{promoted['id']}/approve", json={"reason": "mine"}, headers=owner_headers
    )
    assert r.status_code == 403, r.text
    r = await api_client.post(
        f"/v1/deployments/{promoted['id']}/approve",
        json={"reason": "looks good", "extra": 1},
        headers=org.headers,
    )
    assert r.status_code == 422
    r = await api_client.post(
        f"/v1/deployments/{promoted['id']}/approve",
        json={"reason": "looks good"},
        headers=org.headers,
    )
    assert r.status_code == 200, r.text
    final = await wait_api(api_client, owner_headers, promoted["id"])
    assert final["status"] == "active" and final["approved_by_user_id"] == str(org.user_id)
    assert (await api_client.get(f"/v1/sites/{final['id']}/")).text == page.text
    async with session_maker() as session:
        actions = set(
            (
                await session.scalars(
                    select(AuditLog.action).where(
                        AuditLog.organization_id == org.org_id,
                        AuditLog.resource_id == uuid.UUID(final["id"]),
                    )
                )
            ).all()
        )
    assert {"deployment.promote", "deployment.approve"} <= actions


async def test_bad_input_is_a_clear_4xx(api_client, session_maker, tmp_path):
    org = await make_org(session_maker)
    project_id, vercel = await make_environment(session_maker, org.org_id, provider="vercel")
    r = await api_client.post(
        f"/v1/environments/{vercel}/deployments",
        json={"version": "1", "source_dir": str(tmp_path)},
        headers=org.headers,
    )
    assert r.status_code == 422 and "provider not available" in r.text
    _, docker_env = await make_environment(session_maker, org.org_id, project_id=project_id)
    url = f"/v1/environments/{docker_env}/deployments"
    assert (await api_client.post(url, json={}, headers=org.headers)).status_code == 422
    assert (
        await api_client.post(url, json={"version": "1", "bogus": 1}, headers=org.headers)
    ).status_code == 422
    # A failed pipeline run cannot be deployed.
    run = await make_pipeline_run(session_maker, org.org_id, project_id, status="failed")
    r = await api_client.post(url, json={"pipeline_run_id": str(run.id)}, headers=org.headers)
    assert r.status_code == 409 and "only a successful run" in r.text
    r = await api_client.post(url, json={"pipeline_run_id": str(uuid.uuid4())}, headers=org.headers)
    assert r.status_code == 404
    async with session_maker() as session:
        from db.models.deployments import Deployment

        count = (
            await session.scalars(select(Deployment.id).where(Deployment.project_id == project_id))
        ).all()
    assert count == []
