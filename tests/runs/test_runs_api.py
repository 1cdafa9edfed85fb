"""The runs API over HTTP: trigger → 202, detail, logs (download + resumable SSE), artifacts,
cancel/rerun, tenancy (another organization's IDs are 404) and bad input (4xx, never 500)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from db.models.pipelines import Pipeline
from db.models.projects import Repository
from db.session import session_scope
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    make_pipeline,
    parse_sse,
    run_row,
    stage,
    wait_for,
)


async def wait_finished(session_maker, run_id: uuid.UUID):
    async def done() -> bool:
        return (await run_row(session_maker, run_id)).status in ("success", "failed", "cancelled")

    await wait_for(done, timeout=60)
    return await run_row(session_maker, run_id)


async def test_trigger_read_logs_artifacts(api_client, session_maker, worker) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage(
                "build",
                ["for i in $(seq 1 50); do echo line-$i; done", "echo bin > app.bin"],
                artifact_paths=["app.bin"],
            ),
            stage("test", "exit 4", 1),
        ],
    )
    resp = await api_client.post(
        f"/v1/pipelines/{pipeline_id}/runs",
        json={"branch": "main", "variables": [{"name": "K", "value": "v", "secret": False}]},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["run_number"] == 1 and body["status"] == "queued"
    assert body["variable_names"] == ["K"]
    run = await wait_finished(session_maker, uuid.UUID(body["id"]))
    assert run.status == "failed"

    detail = (await api_client.get(f"/v1/runs/{run.id}", headers=org.headers)).json()
    stages = {s["stage_name"]: s for s in detail["stages"]}
    assert stages["build"]["status"] == "success" and stages["test"]["exit_code"] == 4

    listing = await api_client.get(f"/v1/pipelines/{pipeline_id}/runs", headers=org.headers)
    assert [r["id"] for r in listing.json()["items"]] == [str(run.id)]

    log = await api_client.get(f"/v1/runs/{run.id}/stages/build/logs", headers=org.headers)
    assert log.status_code == 200
    lines = log.text.splitlines()
    assert [x for x in lines if x.startswith("line-")] == [f"line-{i}" for i in range(1, 51)]

    # Resume from an event ID: only later lines, numbered `<attempt>:<line>`, then the end event.
    # A plain line number (the form before attempts were in the ID) still works.
    for last_event_id in ("1:40", "40"):
        sse = await api_client.get(
            f"/v1/runs/{run.id}/stages/build/logs",
            params={"follow": "true"},
            headers={**org.headers, "Last-Event-ID": last_event_id},
        )
        events = parse_sse(sse.text)
        numbered = [i for i, t, _ in events if t == "line"]
        assert numbered and numbered[0] == "1:41"
        assert numbered == [f"1:{n}" for n in range(41, 41 + len(numbered))]
        assert events[-1][1] == "end"

    arts = (await api_client.get(f"/v1/runs/{run.id}/artifacts", headers=org.headers)).json()
    assert [a["name"] for a in arts] == ["app.bin"]
    blob = await api_client.get(f"/v1/runs/{run.id}/artifacts/{arts[0]['id']}", headers=org.headers)
    assert blob.content == b"bin\n"

    # Finished: cancel conflicts; rerun from failed starts run 2.
    assert (
        await api_client.post(f"/v1/runs/{run.id}/cancel", headers=org.headers)
    ).status_code == 409
    again = await api_client.post(
        f"/v1/runs/{run.id}/rerun", params={"from": "failed"}, headers=org.headers
    )
    assert again.status_code == 202 and again.json()["run_number"] == 2
    rerun = await wait_finished(session_maker, uuid.UUID(again.json()["id"]))
    assert rerun.reuse_from_run_id == run.id


async def test_live_follow_and_cancel(api_client, session_maker, worker) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("tail", ["i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done"])],
    )
    resp = await api_client.post(f"/v1/pipelines/{pipeline_id}/runs", json={}, headers=org.headers)
    run_id = resp.json()["id"]

    async def has_lines() -> bool:
        r = await api_client.get(f"/v1/runs/{run_id}/stages/tail/logs", headers=org.headers)
        return r.status_code == 200 and "tick-5" in r.text

    await wait_for(has_lines)
    detail = (await api_client.get(f"/v1/runs/{run_id}", headers=org.headers)).json()
    assert detail["live"]["running"] == ["tail"]

    async def cancel_soon() -> None:
        await asyncio.sleep(1.0)
        r = await api_client.post(f"/v1/runs/{run_id}/cancel", headers=org.headers)
        assert r.status_code == 202

    canceller = asyncio.create_task(cancel_soon())
    sse = await api_client.get(
        f"/v1/runs/{run_id}/stages/tail/logs",
        params={"follow": "true", "after": "2"},
        headers=org.headers,
        timeout=60,
    )
    await canceller
    events = parse_sse(sse.text)
    numbered = [i for i, t, _ in events if t == "line"]
    assert numbered[0] == "1:3" and numbered == [f"1:{n}" for n in range(3, 3 + len(numbered))]
    assert events[-1] == (None, "end", "cancelled")
    run = await wait_finished(session_maker, uuid.UUID(run_id))
    assert run.status == "cancelled"


async def test_other_tenant_is_404(api_client, session_maker, settings) -> None:
    owner = await make_org(session_maker)
    stranger = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, owner.org_id, [stage("s", "true")])
    run = await create_run(session_maker, settings, owner.org_id, pipeline_id)
    h = stranger.headers
    assert (
        await api_client.post(f"/v1/pipelines/{pipeline_id}/runs", json={}, headers=h)
    ).status_code == 404
    assert (await api_client.get(f"/v1/pipelines/{pipeline_id}/runs", headers=h)).status_code == 404
    for path in (
        f"/v1/runs/{run.id}",
        f"/v1/runs/{run.id}/artifacts",
        f"/v1/runs/{run.id}/stages/s/logs",
    ):
        assert (await api_client.get(path, headers=h)).status_code == 404, path
    assert (await api_client.post(f"/v1/runs/{run.id}/cancel", headers=h)).status_code == 404
    assert (await api_client.post(f"/v1/runs/{run.id}/rerun", headers=h)).status_code == 404
    assert (
        await api_client.get(f"/v1/runs/{uuid.uuid4()}", headers=owner.headers)
    ).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"branch": "a..b"},
        {"branch": "has space"},
        {"branch": "-rf"},
        {"commit_sha": "not-a-sha"},
        {"variables": [{"name": "FORGELINE_RUN_ID", "value": "x"}]},
        {"variables": [{"name": "bad-name", "value": "x"}]},
        {"variables": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        {"unknown": 1},
        {"trigger": "push"},
    ],
)
async def test_bad_input_is_422(api_client, session_maker, body) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    resp = await api_client.post(
        f"/v1/pipelines/{pipeline_id}/runs", json=body, headers=org.headers
    )
    assert resp.status_code == 422, resp.text
    from sqlalchemy import func, select

    from db.models.pipelines import PipelineRun

    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(PipelineRun)
            .where(PipelineRun.pipeline_id == pipeline_id)
        )
    assert count == 0  # nothing half-written


async def test_run_numbers_sequential_under_concurrent_starts(session_maker, settings) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    runs = await asyncio.gather(
        *(create_run(session_maker, settings, org.org_id, pipeline_id) for _ in range(12))
    )
    assert sorted(r.run_number for r in runs) == list(range(1, 13))


async def test_a_run_without_branch_or_commit_builds_the_default_branch(
    session_maker, settings
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    no_repository = await create_run(session_maker, settings, org.org_id, pipeline_id)
    assert no_repository.branch is None
    async with session_scope(session_maker) as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        session.add(
            Repository(
                project_id=pipeline.project_id,
                provider="git",
                url="https://example.com/acme/site.git",
                default_branch="trunk",
            )
        )
    default = await create_run(session_maker, settings, org.org_id, pipeline_id)
    assert default.branch == "trunk"
    explicit = await create_run(session_maker, settings, org.org_id, pipeline_id, branch="dev")
    assert explicit.branch == "dev"


async def test_queued_runs_show_their_place_in_the_build_slot_queue(
    api_client, session_maker, worker
) -> None:
    """One build slot: while the first run builds, the next two wait in the order they claimed
    the slot (positions 1, 2); when the first ends (cancelled here, so the test and not a sleep
    decides when) each queued run starts in turn; a running or finished run has no position.

    Each run is triggered once the one before holds its place: runs triggered in the same instant
    queue in the order their workflows claim, which the test does not try to predict."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep ${HOLD:-1}")], concurrent_builds=1
    )

    async def detail(run_id: str) -> dict[str, Any]:
        resp = await api_client.get(f"/v1/runs/{run_id}", headers=org.headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def placed(run_id: str, position: int | None, status: str) -> Any:
        async def check() -> bool:
            body = await detail(run_id)
            return bool(body["status"] == status and body["queue_position"] == position)

        return check

    ids: list[str] = []
    for hold, position, run_status in (
        ("600", None, "running"),
        ("1", 1, "queued"),
        ("1", 2, "queued"),
    ):
        resp = await api_client.post(
            f"/v1/pipelines/{pipeline_id}/runs",
            json={"variables": [{"name": "HOLD", "value": hold}]},
            headers=org.headers,
        )
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
        await wait_for(placed(ids[-1], position, run_status), timeout=60)

    assert [(await detail(i))["queue_position"] for i in ids] == [None, 1, 2]
    queued = await detail(ids[2])
    assert queued["live"]["queued_for_slot"] is True

    cancel = await api_client.post(f"/v1/runs/{ids[0]}/cancel", headers=org.headers)
    assert cancel.status_code == 202, cancel.text
    assert (await wait_finished(session_maker, uuid.UUID(ids[0]))).status == "cancelled"
    second = await wait_finished(session_maker, uuid.UUID(ids[1]))
    third = await wait_finished(session_maker, uuid.UUID(ids[2]))
    assert second.status == third.status == "success"
    # One slot: the third run started only once the second had finished.
    assert second.finished_at is not None and third.started_at is not None
    assert second.finished_at <= third.started_at
    assert (await detail(ids[2]))["queue_position"] is None
