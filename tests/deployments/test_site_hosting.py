"""Static sites end to end on a real Caddy: each on a host name of its own (not the API's origin),
a hostile release (a link to /etc/passwd) fails with a clear message while the previous version
keeps serving, and a concurrent duplicate of the release activity changes nothing."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from infra.sites import site_prefix
from tests.deployments.helpers import (
    deployment_row,
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    wait_status,
)
from tests.deployments.images import write_context
from tests.deployments.proxy import via_proxy
from tests.factories import make_org
from workflows.deployment_models import DeploymentSource, ReleaseRequest


async def fetch(url: str, port: int) -> httpx.Response:
    target, host = via_proxy(url, port)
    async with httpx.AsyncClient() as http:
        return await http.get(target, headers=host)


async def test_hostile_release_fails_and_the_previous_site_keeps_serving(
    settings, session_maker, temporal_client, task_queue
):
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", config={"health_check_passes": 1}
    )
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        good = write_context(sources / "v1", None, "v1")
        (good / "www" / ".env.production").write_text("SECRET=1")
        v1 = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            DeploymentSource(version="v1", context_dir=str(good), output_dir="www"),
            task_queue=task_queue,
        )
        row = await wait_status(session_maker, v1, ("active", "failed"))
        assert row.status == "active" and row.url, row.error
        site_url: str = row.url
        assert httpx.URL(site_url).host != httpx.URL(settings.public_base_url).host
        page = await fetch(site_url, settings.proxy_http_port)
        assert page.status_code == 200 and "v1" in page.text
        dotfile = await fetch(site_url + "/.env.production", settings.proxy_http_port)
        assert dotfile.status_code == 404

        bad = write_context(sources / "v2", None, "v2")
        (bad / "www" / "passwd.txt").symlink_to("/etc/passwd")
        v2 = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            DeploymentSource(version="v2", context_dir=str(bad), output_dir="www"),
            task_queue=task_queue,
        )
        failed = await wait_status(session_maker, v2, ("active", "failed", "rolled_back"))
        assert failed.status == "failed"
        assert "passwd.txt is a symbolic link to a path outside" in (failed.error or "")
        # The environment's host still serves v1, and nothing of /etc/passwd is anywhere.
        page = await fetch(site_url, settings.proxy_http_port)
        assert page.status_code == 200 and "v1" in page.text
        leak = await fetch(site_url + "/passwd.txt", settings.proxy_http_port)
        assert leak.status_code == 404 and "root:" not in leak.text
        assert not activities._store.exists(f"{site_prefix(str(v2))}/passwd.txt")

        # A duplicate of v1's release activity (a retry racing the first): same site, same URL.
        req = ReleaseRequest(
            deployment_id=str(v1),
            organization_id=str(org.org_id),
            project_id=str(project_id),
            environment_id=str(env_id),
            provider="static",
            static_prefix=row.artifact_key,
        )
        results = await asyncio.gather(
            activities.providers.static.release(req), activities.providers.static.release(req)
        )
        assert {r.url for r in results} == {site_url}
        assert (await deployment_row(session_maker, v1)).status == "active"
        leftovers = [
            p.name
            for p in settings.published_sites_dir.iterdir()
            if p.name.endswith(tuple(str(d) for d in (v1, v2))) or str(v1) in p.name
        ]
        assert leftovers == [str(v1)]
        assert uuid.UUID(leftovers[0]) == v1
