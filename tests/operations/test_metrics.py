"""`GET /metrics`: request latency by route template, product gauges read from PostgreSQL,
protection by token or loopback, and one consistent view across several API workers."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.app import create_app
from core.operations.gauges import CachedGauges
from forgeline.settings import Settings
from forgeline.statuses.deployments import DeploymentStatus
from tests.api_process import ApiProcess
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage

LATENCY = "forgeline_http_request_duration_seconds"


def samples(body: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def value(body: str, name: str, **labels: str) -> float:
    found = [s.value for s in samples(body) if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def request_count(body: str, route: str, status: str, method: str = "GET") -> float:
    wanted = {"method": method, "route": route, "status": status}
    return sum(
        s.value for s in samples(body) if s.name == f"{LATENCY}_count" and s.labels == wanted
    )


def fresh_gauges(app: Any, session_maker: async_sessionmaker[AsyncSession]) -> None:
    app.state.metric_gauges = CachedGauges(session_maker, ttl_seconds=0)


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    app: Any, api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    before = (await api_client.get("/metrics")).text
    missing = [uuid.uuid4() for _ in range(3)]
    for project_id in missing:
        answer = await api_client.get(f"/v1/projects/{project_id}", headers=org.headers)
        assert answer.status_code == 404
    await api_client.get(f"/no/such/{uuid.uuid4()}")
    scrape = await api_client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    body = scrape.text
    route = "/v1/projects/{project_id}"
    assert request_count(body, route, "404") - request_count(before, route, "404") == 3
    assert request_count(body, "<unmatched>", "404") >= 1
    # No raw path or ID ever becomes a label value.
    assert not any(str(project_id) in body for project_id in missing)


async def test_hostile_methods_do_not_mint_label_values(api_client: httpx.AsyncClient) -> None:
    await api_client.request("BREW", "/metrics")
    body = (await api_client.get("/metrics")).text
    methods = {s.labels["method"] for s in samples(body) if s.name == f"{LATENCY}_count"}
    assert "BREW" not in methods and "other" in methods


async def test_gauges_follow_the_database_at_scrape_time(
    app: Any,
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    fresh_gauges(app, session_maker)
    before = (await api_client.get("/metrics")).text
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("one", "true")])
    await create_run(session_maker, settings, org.org_id, pipeline_id)
    await create_run(session_maker, settings, org.org_id, pipeline_id)
    after = (await api_client.get("/metrics")).text
    queued = "forgeline_pipeline_runs"
    assert value(after, queued, status="queued") - value(before, queued, status="queued") == 2
    by_status = text("SELECT status, count(*) FROM deployments GROUP BY status")
    async with session_maker() as session:
        deployments = {str(status): int(n) for status, n in (await session.execute(by_status))}
    for status in DeploymentStatus:
        assert value(after, "forgeline_deployments", status=status) == deployments.get(status, 0)


async def test_a_cached_snapshot_is_reused_within_its_ttl(
    app: Any,
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    app.state.metric_gauges = CachedGauges(session_maker, ttl_seconds=3600)
    first = (await api_client.get("/metrics")).text
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("one", "true")])
    await create_run(session_maker, settings, org.org_id, pipeline_id)
    second = (await api_client.get("/metrics")).text
    name = "forgeline_pipeline_runs"
    assert value(first, name, status="queued") == value(second, name, status="queued")
    fresh_gauges(app, session_maker)


async def test_remote_clients_are_refused_without_a_token(app: Any) -> None:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 404
    assert LATENCY not in answer.text


async def test_with_a_token_only_the_token_opens_metrics(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    token = "metrics-" + uuid.uuid4().hex
    guarded = create_app(
        settings.model_copy(update={"metrics_token": SecretStr(token)}),
        session_maker=session_maker,
    )
    transport = httpx.ASGITransport(app=guarded, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        hostile: list[list[tuple[bytes, bytes]]] = [
            [],
            [(b"authorization", b"Bearer wrong")],
            [(b"authorization", f"Bearer {token}x".encode())],
            [(b"authorization", token.encode())],
            [(b"authorization", ("Bearer " + "\u00e9" * 40).encode("latin-1"))],
        ]
        for headers in hostile:
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert LATENCY not in refused.text
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200
    assert value(allowed.text, "forgeline_pipeline_runs", status="running") >= 0


async def test_two_api_workers_report_every_request_once(
    settings: Settings, tmp_path: Path, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    api = ApiProcess(settings, tmp_path / "api.log", workers=2).start()
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            # New connections spread the requests over both workers.
            for _ in range(20):
                async with httpx.AsyncClient(base_url=api.url, timeout=30) as one_shot:
                    assert (await one_shot.get("/v1/me", headers=org.headers)).status_code == 200
            scrapes = [(await client.get("/metrics")).text for _ in range(4)]
    finally:
        api.stop()
    counts = {request_count(body, "/v1/me", "200") for body in scrapes}
    # Whichever worker answers the scrape sums both workers' samples.
    assert counts == {20.0}
