"""GET /v1/projects/{id}/insights on a seeded history whose answers are known exactly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.deployments import Deployment
from db.models.pipelines import Pipeline, PipelineRun, StageExecution
from db.session import session_scope
from tests.deployments.helpers import make_environment
from tests.factories import OrgFixture, make_org
from tests.runs.helpers import make_pipeline, stage


async def seed_history(
    session_maker: async_sessionmaker[AsyncSession], org: OrgFixture
) -> tuple[uuid.UUID, uuid.UUID]:
    """Four runs and five production changes five days ago, plus noise outside the answer."""
    t0 = datetime.now(UTC) - timedelta(days=5)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        project_id = pipeline.project_id
    _, production = await make_environment(
        session_maker, org.org_id, env_type="production", project_id=project_id
    )
    _, staging = await make_environment(
        session_maker, org.org_id, env_type="staging", project_id=project_id
    )

    def run(n: int, status: str, commit: str, queued: datetime, queue_s: int, dur: int | None):
        return PipelineRun(
            id=uuid.uuid4(),
            pipeline_id=pipeline_id,
            project_id=project_id,
            organization_id=org.org_id,
            run_number=n,
            status=status,
            commit_sha=commit,
            created_at=queued,
            queued_at=queued,
            started_at=queued + timedelta(seconds=queue_s),
            finished_at=queued + timedelta(seconds=queue_s + (dur or 0)),
            duration_seconds=dur,
        )

    hour = timedelta(hours=1)
    runs = [
        run(1, "success", "c1", t0, 10, 100),
        run(2, "failed", "c2", t0 + hour, 30, 200),
        run(3, "success", "c2", t0 + 2 * hour, 20, 300),
        run(4, "cancelled", "c3", t0 + 3 * hour, 40, None),
        # Outside a 30-day window.
        run(5, "failed", "c0", t0 - timedelta(days=40), 5, 999),
    ]
    stages = [
        (runs[0], "build", 1, "failed", 400),
        (runs[0], "build", 2, "success", 1000),
        (runs[0], "test", 1, "success", 500),
        (runs[1], "build", 1, "success", 2000),
        (runs[1], "test", 1, "failed", 700),
        (runs[2], "build", 1, "success", 3000),
        (runs[2], "test", 1, "success", 600),
        (runs[4], "test", 1, "failed", 50),
    ]

    def deployment(env: uuid.UUID, status: str, commit: str, finished: datetime, **kw: Any):
        return Deployment(
            id=kw.pop("id", uuid.uuid4()),
            environment_id=env,
            project_id=project_id,
            organization_id=org.org_id,
            version=commit,
            commit_sha=commit,
            status=status,
            provider="docker",
            started_at=finished - timedelta(seconds=60),
            finished_at=finished,
            **kw,
        )

    rolled_back_id = uuid.uuid4()
    deployments = [
        deployment(production, "superseded", "c1", t0 + timedelta(seconds=1000)),
        deployment(
            production,
            "rolled_back",
            "c2",
            t0 + 2 * hour + timedelta(seconds=600),
            id=rolled_back_id,
            rolled_back_at=t0 + 2 * hour + timedelta(seconds=900),
        ),
        # The rollback: a restoration, not a change.
        deployment(
            production,
            "superseded",
            "c1",
            t0 + 2 * hour + timedelta(seconds=1500),
            rollback_of_id=rolled_back_id,
        ),
        deployment(production, "failed", "c3", t0 + 4 * hour),
        deployment(production, "active", "c2", t0 + 5 * hour),
        # Not production.
        deployment(staging, "failed", "c3", t0 + 4 * hour),
    ]
    async with session_scope(session_maker) as session:
        session.add_all(runs)
        await session.flush()
        session.add_all(
            StageExecution(
                run_id=r.id, stage_name=name, attempt=attempt, status=status, duration_ms=ms
            )
            for r, name, attempt, status, ms in stages
        )
        for d in deployments:
            session.add(d)
            await session.flush()
    return project_id, pipeline_id


async def test_insights_of_a_known_history(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    project_id, pipeline_id = await seed_history(session_maker, org)
    answer = await api_client.get(
        f"/v1/projects/{project_id}/insights", params={"window": "30d"}, headers=org.headers
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["runs"], body["success_rate"], body["window_days"]) == (4, 0.6667, 30)
    [pipeline] = body["pipelines"]
    assert pipeline["pipeline_id"] == str(pipeline_id)
    assert (pipeline["succeeded"], pipeline["failed"], pipeline["cancelled"]) == (2, 1, 1)
    assert pipeline["duration_seconds"] == {"p50": 200.0, "p95": 290.0}
    assert pipeline["queue_seconds"] == {"p50": 25.0, "p95": 38.5}
    stages = {s["stage_name"]: s for s in body["stages"]}
    assert stages["build"]["duration_ms"] == {"p50": 2000.0, "p95": 2900.0}
    assert (stages["build"]["success_rate"], stages["build"]["passed_on_retry"]) == (1.0, 1)
    assert stages["test"]["duration_ms"] == {"p50": 600.0, "p95": 690.0}
    assert (stages["test"]["success_rate"], stages["test"]["failed_then_passed"]) == (0.6667, 1)
    assert [s["stage_name"] for s in body["flakiest_stages"]] == ["build", "test"]
    assert body["dora"] == {
        "deployments": 2,
        "deployment_frequency_per_day": round(2 / 30, 4),
        "lead_time_seconds": {"p50": 7700.0, "p95": None},
        "lead_time_mean_seconds": 7700.0,
        "change_failure_rate": 0.5,
        "failed_changes": 2,
        "time_to_restore_mean_seconds": 2100.0,
        "unrestored_failures": 0,
    }
    # A one-day window holds none of it.
    empty = await api_client.get(
        f"/v1/projects/{project_id}/insights", params={"window": "1d"}, headers=org.headers
    )
    assert (empty.json()["runs"], empty.json()["dora"]["deployments"]) == (0, 0)
    # Another tenant's project does not exist for it.
    other = await make_org(session_maker)
    foreign = await api_client.get(f"/v1/projects/{project_id}/insights", headers=other.headers)
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    "window",
    [
        "0d",
        "366d",
        "1000d",
        "-1d",
        "30",
        "30h",
        "d",
        "1.5d",
        "030d",
        "30d ",
        "\u0663\u0660d",
        "1e3d",
        "",
    ],
)
async def test_hostile_windows_are_refused(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], window: str
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
    answer = await api_client.get(
        f"/v1/projects/{pipeline.project_id}/insights",
        params={"window": window},
        headers=org.headers,
    )
    assert answer.status_code == 422, (window, answer.text)
