"""GET /v1/organizations/{id}/insights on two seeded projects whose answers are known exactly:
the project metrics over both, one line per active project, the same answer from the daily
rollups (and while they are written), another tenant's ID or a random one a 404, a bad window a
422 with its reason."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.insights import rollups
from db.models.deployments import Deployment
from db.models.pipelines import Pipeline, PipelineRun
from db.session import session_scope
from tests.deployments.helpers import make_environment
from tests.factories import OrgFixture, make_org
from tests.operations.test_insights import seed_history
from tests.runs.helpers import make_pipeline, stage

Maker = async_sessionmaker[AsyncSession]


async def seed_second_project(session_maker: Maker, org: OrgFixture) -> tuple[uuid.UUID, str]:
    """Four runs (three green: 50, 150, 250 s; one red: 10 s) three days ago and one production
    change live 2300 s after its commit's first run; returns the project and its first run."""
    t0 = datetime.now(UTC) - timedelta(days=3)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("lint", "true")])
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        project_id = pipeline.project_id
    _, production = await make_environment(
        session_maker, org.org_id, env_type="production", project_id=project_id
    )
    outcomes = [("success", 50), ("success", 150), ("failed", 10), ("success", 250)]
    runs = [
        PipelineRun(
            id=uuid.uuid4(),
            pipeline_id=pipeline_id,
            project_id=project_id,
            organization_id=org.org_id,
            run_number=n + 1,
            status=status,
            commit_sha=f"d{n}",
            created_at=t0 + timedelta(hours=n),
            queued_at=t0 + timedelta(hours=n),
            started_at=t0 + timedelta(hours=n, seconds=4),
            finished_at=t0 + timedelta(hours=n, seconds=4 + duration),
            duration_seconds=duration,
        )
        for n, (status, duration) in enumerate(outcomes)
    ]
    async with session_scope(session_maker) as session:
        session.add_all(runs)
        session.add(
            Deployment(
                id=uuid.uuid4(),
                environment_id=production,
                project_id=project_id,
                organization_id=org.org_id,
                version="d0",
                commit_sha="d0",
                status="active",
                provider="docker",
                started_at=t0 + timedelta(seconds=2000),
                finished_at=t0 + timedelta(seconds=2300),
            )
        )
    return project_id, str(runs[0].id)


async def insights(
    api: httpx.AsyncClient, org: OrgFixture, organization_id: Any = None, **params: str
) -> httpx.Response:
    target = organization_id or org.org_id
    return await api.get(f"/v1/organizations/{target}/insights", params=params, headers=org.headers)


def stable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("since", "until")}


async def roll_up(session_maker: Maker, org: OrgFixture, *project_ids: uuid.UUID) -> None:
    today = datetime.now(UTC).date()
    for project_id in project_ids:
        async with session_scope(session_maker) as session:
            await rollups.rollup_project(
                session, project_id, org.org_id, today=today, horizon_days=3
            )


async def test_organization_insights_over_two_projects(
    api_client: httpx.AsyncClient, session_maker: Maker
) -> None:
    org = await make_org(session_maker)
    first, _ = await seed_history(session_maker, org)
    second, second_run = await seed_second_project(session_maker, org)
    await make_pipeline(session_maker, org.org_id, [stage("idle", "true")])  # no activity
    answer = await insights(api_client, org, window="30d")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["organization_id"] == str(org.org_id) and body["window_days"] == 30
    # 2 + 3 green, 1 + 1 red (the cancelled run counts as a run, not in the rate).
    assert (body["runs"], body["success_rate"]) == (8, round(5 / 7, 4))
    assert len(body["pipelines"]) == 2
    assert {s["stage_name"] for s in body["stages"]} == {"build", "test"}
    assert [s["stage_name"] for s in body["flakiest_stages"]] == ["build", "test"]
    # Lead times 1000 and 14400 s (first project) and 2300 s (second).
    assert body["dora"] == {
        "deployments": 3,
        "deployment_frequency_per_day": 0.1,
        "lead_time_seconds": {"p50": 2300.0, "p95": None},
        "lead_time_mean_seconds": 5900.0,
        "change_failure_rate": 0.4,
        "failed_changes": 2,
        "time_to_restore_mean_seconds": 2100.0,
        "unrestored_failures": 0,
    }
    projects = {p["project_id"]: p for p in body["projects"]}
    assert set(projects) == {str(first), str(second)}  # the idle project is left out
    one, two = projects[str(first)], projects[str(second)]
    assert (one["runs"], one["success_rate"], one["dora"]["deployments"]) == (4, 0.6667, 2)
    assert one["duration_seconds"] == {"p50": 200.0, "p95": 290.0}
    assert (two["runs"], two["success_rate"], two["dora"]["change_failure_rate"]) == (4, 0.75, 0.0)
    assert two["duration_seconds"] == {"p50": 100.0, "p95": 235.0}
    assert two["queue_seconds"] == {"p50": 4.0, "p95": 4.0}
    assert two["project_slug"].startswith("p-")
    # The project's own insight says the same about it.
    alone = await api_client.get(f"/v1/projects/{second}/insights", headers=org.headers)
    assert (alone.json()["runs"], alone.json()["success_rate"]) == (4, 0.75)

    # From the daily rollups (written while the organization is read): the same answers, and
    # a rolled-up day is read from its row, not from the runs.
    rollup = asyncio.create_task(roll_up(session_maker, org, first, second))
    reads = await asyncio.gather(*(insights(api_client, org, window="30d") for _ in range(4)))
    await rollup
    for read in reads:
        assert stable(read.json()) == stable(body)
    async with session_scope(session_maker) as session:
        await session.execute(delete(PipelineRun).where(PipelineRun.id == uuid.UUID(second_run)))
    rolled = await insights(api_client, org, window="30d")
    assert stable(rolled.json()) == stable(body)
    # A window shorter than the history holds none of it.
    empty = (await insights(api_client, org, window="1d")).json()
    assert (empty["runs"], empty["dora"]["deployments"], empty["projects"]) == (0, 0, [])


async def test_other_organizations_and_bad_windows(
    api_client: httpx.AsyncClient, session_maker: Maker
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    await seed_second_project(session_maker, org)
    # Another tenant's ID, a random one: the same 404, nothing of the organization in it.
    for target in (org.org_id, uuid.uuid4()):
        foreign = await insights(api_client, other, target)
        assert foreign.status_code == 404, foreign.text
        assert foreign.headers["content-type"].startswith("application/problem+json")
        assert foreign.json()["detail"] == "organization not found"
        assert "runs" not in foreign.json()
    assert (await insights(api_client, other, "not-a-uuid")).status_code == 422
    # A new organization without projects: an empty answer.
    nothing = (await insights(api_client, other)).json()
    assert (nothing["runs"], nothing["success_rate"], nothing["projects"]) == (0, None, [])
    unauthenticated = await api_client.get(f"/v1/organizations/{org.org_id}/insights")
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize("window", ["0d", "366d", "30h", "30", "", "1e3d", "\u0663\u0660d"])
async def test_a_bad_window_is_a_422_with_its_reason(
    api_client: httpx.AsyncClient, session_maker: Maker, window: str
) -> None:
    org = await make_org(session_maker)
    answer = await insights(api_client, org, window=window)
    assert answer.status_code == 422, answer.text
    assert "window" in answer.json()["detail"]
