"""Docker deployments behind a real Caddy: stable host names, zero-downtime swaps, rollback routes
back, hostile names, concurrent deployments and a proxy restarted mid-deploy."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity

from activities.deployments.activities import DeploymentActivities
from infra.deploy_containers import DockerReleaser
from infra.proxy_routes import (
    ENV_ROUTE_PREFIX,
    CaddyRoutes,
    Route,
    environment_hosts,
    host_label,
    is_hostname,
)
from infra.storage import LocalObjectStore
from tests.deployments.helpers import (
    deployment_row,
    docker_environment,
    get_app,
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    wait_status,
)
from tests.deployments.images import HEALTHY, NO_CONTENT, write_context
from tests.deployments.proxy import CaddyProcess, via_proxy
from tests.factories import make_org
from workflows.deployment_models import DeploymentSource, RetireRequest, RetireResult

DONE = ("active", "failed", "rolled_back", "cancelled")
HOSTILE = [
    "../../etc",
    "Prod\nHost: evil.example",
    '"}]},{"@id":"x',
    "*.localhost",
    "ünïcødé prød",
    "a" * 300,
    "---",
    "",
    "x.y.z",
    "..",
]


def routes_of(settings: Any) -> CaddyRoutes:
    return CaddyRoutes(settings.proxy_admin_url, http_port=settings.proxy_http_port)


def source(tmp_path: Path, version: str, dockerfile: str = HEALTHY) -> DeploymentSource:
    context = write_context(tmp_path / version, dockerfile, f"body-{version}")
    return DeploymentSource(version=version, context_dir=str(context))


async def test_swap_has_no_failed_request_and_a_broken_release_routes_back(
    docker, settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org, sources, env_id, activities = await docker_environment(
        settings, session_maker, temporal_client, docker
    )
    releaser = DockerReleaser(docker)
    routes = routes_of(settings)
    try:
        async with running_worker(temporal_client, task_queue, activities):
            v1 = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                source(sources, "v1"),
                task_queue=task_queue,
            )
            row1 = await wait_status(session_maker, v1, DONE)
            assert row1.status == "active", row1.error
            url = row1.url or ""
            assert url.endswith(f".localhost:{settings.proxy_http_port}"), url
            assert "body-v1" in (await get_app(settings, url)).text

            # Visitors keep requesting the stable URL through Caddy during the whole swap.
            target, headers = via_proxy(url, settings.proxy_http_port)
            bodies: list[str] = []
            failures: list[str] = []
            stop = asyncio.Event()

            # A visitor as browsers are: a GET whose connection closed before any response is
            # sent again once (RFC 9110 9.2.2). Caddy closes connections of the config it replaces
            # on every route change; those are counted, and none may fail twice.
            retried: list[str] = []

            async def visit(http: httpx.AsyncClient) -> None:
                for attempt in (1, 2):
                    try:
                        r = await http.get(target, headers=headers)
                    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                        if attempt == 1:
                            retried.append(repr(exc))
                            continue
                        failures.append(repr(exc))
                        return
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        return
                    if r.status_code != 200:
                        failures.append(f"HTTP {r.status_code}")
                    else:
                        bodies.append(r.text)
                    return

            async def visitor() -> None:
                async with httpx.AsyncClient(timeout=5) as http:
                    for _ in range(20_000):  # bounded; stopped once v2 serves
                        if stop.is_set():
                            return
                        await visit(http)

            loop_task = asyncio.create_task(visitor())
            v2 = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                source(sources, "v2"),
                task_queue=task_queue,
            )
            row2 = await wait_status(session_maker, v2, DONE)
            assert row2.status == "active", row2.error
            await asyncio.sleep(0.5)
            stop.set()
            await loop_task
            assert failures == []
            served = [("v1" if "body-v1" in b else "v2") for b in bodies]
            assert "v1" in served and "v2" in served
            # Once v2 served, v1 never came back.
            assert "v1" not in served[served.index("v2") :]
            print(f"swap: {len(bodies)} requests, 0 failed, {len(retried)} resent once")
            assert row2.url == url
            assert [c.labels["forgeline.deployment_id"] for c in releaser.managed(str(env_id))] == [
                str(v2)
            ]

            v3 = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                source(sources, "v3", NO_CONTENT),
                task_queue=task_queue,
            )
            row3 = await wait_status(session_maker, v3, DONE)
            assert row3.status == "rolled_back" and row3.rolled_back_to_id == v2
            assert "body-v2" in (await get_app(settings, url)).text
            route = await routes.get(f"{ENV_ROUTE_PREFIX}{env_id}")
            described = releaser.describe(str(v2), 8080)
            assert route is not None and described is not None
            assert route.upstream == described.upstream
            # The broken release's own route is gone with its container.
            assert [r.id for r in await routes.routes(f"fl-dep-{v3}")] == []
    finally:
        releaser.remove_environment(str(env_id))


def test_hostile_names_make_valid_distinct_hosts():
    for name in HOSTILE:
        label = host_label(name)
        assert is_hostname(f"{label}.x.localhost"), (name, label)
        assert len(label) <= 40
    hosts = {
        environment_hosts(env, proj, str(uuid.uuid4()), "localhost")[0]
        for env in ("a-b", "a")
        for proj in ("c", "b-c")
    }
    assert len(hosts) == 4  # "a-b" + "c" and "a" + "b-c" stay apart (labels, not joined)
    assert not is_hostname("evil.example\r\nX: y") and not is_hostname("1.2.3.4")


async def test_hostile_names_route_and_same_names_across_tenants_get_distinct_hosts(
    docker, settings, session_maker, temporal_client, tmp_path: Path
):
    """Environments with hostile names in two tenants whose project slugs are equal: each gets
    a host of its own and Caddy keeps loading the config."""
    activities = make_activities(settings, session_maker, temporal_client, docker)
    routes = routes_of(settings)
    env_ids = []
    slug = f"same-{uuid.uuid4().hex[:6]}"
    from db.models.projects import Environment, Project
    from db.session import session_scope

    for _ in range(2):
        org = await make_org(session_maker)
        async with session_scope(session_maker) as session:
            project = Project(
                id=uuid.uuid4(),
                organization_id=org.org_id,
                name="p",
                slug=slug,
                project_type="static_site",
            )
            session.add(project)
            await session.flush()
            for name in ("Prod\nHost: x", "../..", "prod-host-x"):
                env = Environment(
                    id=uuid.uuid4(),
                    project_id=project.id,
                    name=name,
                    env_type="staging",
                    provider="docker",
                    config={},
                )
                session.add(env)
                env_ids.append(env.id)
    claimed: list[str] = []
    for env_id in env_ids:
        hosts = await activities.providers.routing.environment_hosts(str(env_id))
        assert len(hosts) == 1 and is_hostname(hosts[0])
        claimed.append(hosts[0])
        # Idempotent: the assigned host is kept.
        assert await activities.providers.routing.environment_hosts(str(env_id)) == hosts
        await routes.put(
            Route(id=f"{ENV_ROUTE_PREFIX}{env_id}", hosts=hosts, upstream="127.0.0.1:9")
        )
    assert len(set(claimed)) == len(claimed), claimed
    try:
        listed = {r.id for r in await routes.routes(ENV_ROUTE_PREFIX)}
        assert {f"{ENV_ROUTE_PREFIX}{e}" for e in env_ids} <= listed
    finally:
        await routes.remove([f"{ENV_ROUTE_PREFIX}{e}" for e in env_ids])


async def test_concurrent_writers_leave_one_route_per_id(settings):
    routes = routes_of(settings)
    route_id = f"{ENV_ROUTE_PREFIX}{uuid.uuid4()}"
    host = f"race-{uuid.uuid4().hex[:8]}.p.localhost"
    await asyncio.gather(
        *(
            routes.put(Route(id=route_id, hosts=[host], upstream=f"127.0.0.1:{30000 + i}"))
            for i in range(8)
        )
    )
    try:
        found = [r for r in await routes.routes(ENV_ROUTE_PREFIX) if r.id == route_id]
        assert len(found) == 1
    finally:
        await routes.remove([route_id])


async def test_two_concurrent_deployments_leave_one_route_to_a_healthy_container(
    docker, settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org, sources, env_id, activities = await docker_environment(
        settings, session_maker, temporal_client, docker
    )
    releaser = DockerReleaser(docker)
    routes = routes_of(settings)
    try:
        async with running_worker(temporal_client, task_queue, activities):
            deps = await asyncio.gather(
                *(
                    start_deployment(
                        session_maker,
                        temporal_client,
                        org.org_id,
                        env_id,
                        source(sources, v),
                        task_queue=task_queue,
                    )
                    for v in ("a", "b")
                )
            )
            # Both go live in turn (the first may already be superseded when it is looked at),
            # or the one that got the environment second finds the other, requested later,
            # already live and stands down (cancelled, never replacing a newer release).
            finished = (*DONE, "superseded")
            rows = [await wait_status(session_maker, d, finished, timeout=120) for d in deps]
            for r in rows:
                assert r.status in ("active", "superseded") or (
                    r.status == "cancelled"
                    and "requested later, is already live" in (r.error or "")
                ), (r.status, r.error)
            live = [await deployment_row(session_maker, d) for d in deps]
            active = [r for r in live if r.status == "active"]
            assert len(active) == 1, [r.status for r in live]
            env_routes = [
                r
                for r in await routes.routes(ENV_ROUTE_PREFIX)
                if r.id == f"{ENV_ROUTE_PREFIX}{env_id}"
            ]
            assert len(env_routes) == 1
            described = releaser.describe(str(active[0].id), 8080)
            assert described is not None and env_routes[0].upstream == described.upstream
            response = await get_app(settings, active[0].url or "")
            assert response.status_code == 200
            assert [c.labels["forgeline.deployment_id"] for c in releaser.managed(str(env_id))] == [
                str(active[0].id)
            ]
    finally:
        releaser.remove_environment(str(env_id))


class CaddyDownDuringSwap(DeploymentActivities):
    """The first swap attempt finds the proxy stopped; the next one finds it restarted (empty)."""

    def __init__(self, caddy: CaddyProcess, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.caddy = caddy
        self.attempts: list[int] = []

    @activity.defn(name="deployment_retire")
    async def retire(self, req: RetireRequest) -> RetireResult:
        if req.keep_deployment_id and len(self.attempts) == 0:
            self.attempts.append(activity.info().attempt)
            await asyncio.to_thread(self.caddy.stop)
        elif req.keep_deployment_id:
            self.attempts.append(activity.info().attempt)
            if self.caddy.proc is None:
                await asyncio.to_thread(self.caddy.start)
        return await super().retire(req)


async def test_proxy_restarted_mid_deploy_route_converges(
    docker, caddy, settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    _, env_id = await make_environment(session_maker, org.org_id)
    activities = CaddyDownDuringSwap(
        caddy,
        settings=settings,
        session_maker=session_maker,
        temporal=temporal_client,
        docker_client=docker,
        store=LocalObjectStore(settings.objects_dir),
    )
    releaser = DockerReleaser(docker)
    try:
        async with running_worker(temporal_client, task_queue, activities):
            dep = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                source(sources, "v1"),
                task_queue=task_queue,
            )
            row = await wait_status(session_maker, dep, DONE, timeout=90)
        assert row.status == "active", row.error
        assert activities.attempts[:2] == [1, 2]
        # The restarted Caddy started from its file (no routes): the retry put the route back.
        assert "body-v1" in (await get_app(settings, row.url or "")).text
    finally:
        if caddy.proc is None:
            caddy.start()
        releaser.remove_environment(str(env_id))
