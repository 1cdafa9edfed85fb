"""Custom domains on environments: validated host names, one owner across tenants (409), and
served by the environment's route."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from infra.proxy_routes import ENV_ROUTE_PREFIX, CaddyRoutes, Route
from tests.deployments.helpers import make_activities
from tests.factories import make_org


async def _project(api_client, session_maker):
    org = await make_org(session_maker)
    r = await api_client.post(
        "/v1/projects", json={"name": "Shop", "project_type": "api"}, headers=org.headers
    )
    assert r.status_code == 201, r.text
    return org, r.json()["id"]


def _env(name: str, domains: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "env_type": "production",
        "provider": "docker",
        "config": {"domains": domains},
    }


async def test_domains_validated_unique_across_tenants_and_routed(
    api_client, session_maker, settings, temporal_client
):
    domain = f"shop-{uuid.uuid4().hex[:8]}.example.com"
    a, project_a = await _project(api_client, session_maker)
    b, project_b = await _project(api_client, session_maker)
    r = await api_client.post(
        f"/v1/projects/{project_a}/environments",
        json=_env("production", [domain.upper(), f"www.{domain}"]),
        headers=a.headers,
    )
    assert r.status_code == 201, r.text
    env_a = r.json()
    assert env_a["config"]["domains"] == sorted([domain, f"www.{domain}"])

    # Another tenant cannot claim it, on create or on update; nothing is written.
    r = await api_client.post(
        f"/v1/projects/{project_b}/environments",
        json=_env("production", [domain]),
        headers=b.headers,
    )
    assert r.status_code == 409 and domain in r.json()["detail"], r.text
    r = await api_client.post(
        f"/v1/projects/{project_b}/environments", json=_env("production", []), headers=b.headers
    )
    assert r.status_code == 201
    env_b = r.json()
    r = await api_client.patch(
        f"/v1/environments/{env_b['id']}",
        json={"config": {"domains": [f"www.{domain}"]}},
        headers=b.headers,
    )
    assert r.status_code == 409, r.text

    # Hostile or reserved names are a 422.
    for bad in (
        "evil.example\r\nHost: x",
        "*.example.com",
        "a..b.com",
        "127.0.0.1",
        "x" * 64 + ".com",
        "nodot",
        '"}],"handle":[{}]}',
        f"production.shop.{settings.apps_domain}",
    ):
        r = await api_client.patch(
            f"/v1/environments/{env_b['id']}",
            json={"config": {"domains": [bad]}},
            headers=b.headers,
        )
        assert r.status_code == 422, (bad, r.status_code, r.text)

    # Two tenants racing for one fresh domain: exactly one wins.
    fresh = f"race-{uuid.uuid4().hex[:8]}.example.org"
    results = await asyncio.gather(
        api_client.patch(
            f"/v1/environments/{env_a['id']}",
            json={"config": {"domains": [domain, f"www.{domain}", fresh]}},
            headers=a.headers,
        ),
        api_client.patch(
            f"/v1/environments/{env_b['id']}",
            json={"config": {"domains": [fresh]}},
            headers=b.headers,
        ),
    )
    assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]

    # The route serves the generated host and the custom domains.
    activities = make_activities(settings, session_maker, temporal_client, None)
    hosts = await activities.providers.routing.environment_hosts(env_a["id"])
    assert hosts[0].endswith(f".{settings.apps_domain}") and domain in hosts
    routes = CaddyRoutes(settings.proxy_admin_url, http_port=settings.proxy_http_port)
    route_id = f"{ENV_ROUTE_PREFIX}{env_a['id']}"
    await routes.put(Route(id=route_id, hosts=hosts, upstream="127.0.0.1:9"))
    try:
        stored = await routes.get(route_id)
        assert stored is not None and set(stored.hosts) == set(hosts)
        # A config update keeps the assigned host.
        r = await api_client.patch(
            f"/v1/environments/{env_a['id']}",
            json={"config": {"domains": [domain]}},
            headers=a.headers,
        )
        assert r.status_code == 200
        assert (await activities.providers.routing.environment_hosts(env_a["id"]))[0] == hosts[0]
    finally:
        await routes.remove([route_id])
