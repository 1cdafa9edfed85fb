"""Triggers edited through PATCH /v1/pipelines/{id} (validated, stored normalized) and their
`schedule` entries as Temporal Schedules on the dev server: created, updated, paused, deleted with
the pipeline; a firing starts one run with trigger=schedule, once however often it is retried."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import update
from temporalio.client import Client, ScheduleOverlapPolicy, ScheduleRange
from temporalio.service import RPCError, RPCStatusCode

from core.integrations import schedules
from db.models.pipelines import Pipeline, PipelineRun
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import connect_project, runs_of
from workflows.integrations_models import ScheduledRunInput, pipeline_schedule_id
from workflows.scheduled_run import ScheduledRunWorkflow


async def _pipeline(session_maker, settings: Settings) -> tuple[Any, uuid.UUID]:
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker, settings, org.org_id, url="https://github.com/acme/widgets", pipelines=[{}]
    )
    return org, connected.pipeline_ids[0]


async def _exists(client: Client, schedule_id: str) -> bool:
    try:
        await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def _patch(api_client, org, pipeline_id: uuid.UUID, body: dict[str, Any]) -> Any:
    return await api_client.patch(f"/v1/pipelines/{pipeline_id}", json=body, headers=org.headers)


@pytest.mark.parametrize(
    ("triggers", "field"),
    [
        ({"on_push": {"branches": ["[unclosed"]}}, ["on_push", "branches"]),
        ({"on_push": {"brnaches": ["main"]}}, ["on_push", "brnaches"]),
        ({"nightly": True}, ["nightly"]),
        ({"schedule": [{"cron": "61 * * * *"}]}, ["schedule", 0, "cron"]),
        ({"schedule": [{"cron": "* * *"}]}, ["schedule", 0, "cron"]),
        ({"schedule": [{"cron": "0 0 * * *; rm -rf /"}]}, ["schedule", 0, "cron"]),
        ({"schedule": [{"cron": "0 5-1 * * *"}]}, ["schedule", 0, "cron"]),
        ({"schedule": [{"cron": "@daily", "timezone": "Mars/Olympus"}]}, ["schedule", 0]),
        ({"schedule": [{"cron": "@daily", "timezone": "../../../etc/passwd"}]}, ["schedule", 0]),
        ({"schedule": [{"cron": "@daily", "timezone": "/etc/localtime"}]}, ["schedule", 0]),
        ({"schedule": [{"cron": "@daily"}] * 21}, ["schedule"]),
        ({"concurrency": {"group": "x"}}, ["concurrency", "group"]),
    ],
)
async def test_invalid_triggers_are_refused_with_the_field_and_nothing_written(
    api_client, session_maker, settings: Settings, triggers: dict[str, Any], field: list[Any]
) -> None:
    org, pipeline_id = await _pipeline(session_maker, settings)
    r = await _patch(api_client, org, pipeline_id, {"triggers": triggers})
    assert r.status_code == 422, r.text
    locations = [e["loc"] for e in r.json()["errors"]]
    wanted = ["body", "triggers", *map(str, field)]
    assert any(loc[: len(wanted)] == wanted for loc in locations), locations
    got = await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)
    assert got.json()["triggers"] == {} and got.json()["version"] == 1


async def test_triggers_are_stored_normalized_and_other_tenants_get_404(
    api_client, session_maker, settings: Settings, temporal_client: Client
) -> None:
    org, pipeline_id = await _pipeline(session_maker, settings)
    async with session_maker() as session, session.begin():
        await session.execute(
            update(Pipeline).where(Pipeline.id == pipeline_id).values(github_actions_yaml="stale")
        )
    r = await _patch(
        api_client,
        org,
        pipeline_id,
        {"triggers": {"on_push": {"branches": ["main", "release/**"]}, "manual": False}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["triggers"] == {
        "on_push": {"branches": ["main", "release/**"]},
        "manual": False,
        "schedule": [],
        "concurrency": {
            "cancel_in_progress_pull_requests": True,
            "cancel_in_progress_pushes": False,
        },
    }
    assert r.json()["version"] == 2
    exported = await api_client.get(f"/v1/pipelines/{pipeline_id}/export", headers=org.headers)
    assert "stale" not in exported.text and "release/**" in exported.text
    other = await make_org(session_maker)
    r = await _patch(api_client, other, pipeline_id, {"triggers": {}})
    assert r.status_code == 404
    r = await api_client.delete(f"/v1/pipelines/{pipeline_id}", headers=other.headers)
    assert r.status_code == 404
    assert not await _exists(temporal_client, pipeline_schedule_id(str(pipeline_id), 0))


async def _fire(client: Client, schedule_id: str) -> Any:
    """Trigger the schedule now and wait for the firing's workflow result."""
    handle = client.get_schedule_handle(schedule_id)
    before = len((await handle.describe()).info.recent_actions)
    await handle.trigger()
    for _ in range(600):
        actions = (await handle.describe()).info.recent_actions
        if len(actions) > before:
            workflow_id = actions[-1].action.workflow_id  # type: ignore[attr-defined]
            return await client.get_workflow_handle_for(
                ScheduledRunWorkflow.run, workflow_id
            ).result()
        await asyncio.sleep(0.1)
    raise AssertionError("the schedule never fired")


async def test_schedule_lifecycle_with_the_pipeline(
    api_client, session_maker, settings: Settings, temporal_client: Client, worker
) -> None:
    org, pipeline_id = await _pipeline(session_maker, settings)
    first = pipeline_schedule_id(str(pipeline_id), 0)
    second = pipeline_schedule_id(str(pipeline_id), 1)
    r = await _patch(
        api_client,
        org,
        pipeline_id,
        {
            "triggers": {
                "schedule": [
                    {"cron": "0 3 * * MON-FRI", "timezone": "Europe/Paris"},
                    {"cron": "@hourly"},
                ]
            }
        },
    )
    assert r.status_code == 200, r.text
    described = await temporal_client.get_schedule_handle(first).describe()
    # The server stores a cron expression as its calendar.
    [calendar] = described.schedule.spec.calendars
    assert calendar.hour == (ScheduleRange(3),)
    assert calendar.day_of_week == (ScheduleRange(1, 5),)
    assert described.schedule.spec.time_zone_name == "Europe/Paris"
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert not described.schedule.state.paused
    assert await _exists(temporal_client, second)
    exported = await api_client.get(f"/v1/pipelines/{pipeline_id}/export", headers=org.headers)
    assert exported.status_code == 200, exported.text
    assert "cron: 0 3 * * mon-fri" in exported.text and "cron: '@hourly'" in exported.text

    # A firing starts one run with trigger=schedule through the run service.
    fired = await _fire(temporal_client, first)
    assert fired.run_id is not None
    [run] = await runs_of(session_maker, [pipeline_id])
    assert (str(run.id), run.trigger, run.status) == (fired.run_id, "schedule", "queued")
    assert run.metadata_["schedule"]["schedule_id"] == first

    # Pausing the pipeline pauses its schedules; a firing while paused starts nothing.
    r = await _patch(api_client, org, pipeline_id, {"status": "paused"})
    assert r.status_code == 200, r.text
    assert (await temporal_client.get_schedule_handle(first).describe()).schedule.state.paused
    assert (await _fire(temporal_client, first)).skipped == "the pipeline is paused"
    r = await _patch(api_client, org, pipeline_id, {"status": "active"})
    assert not (await temporal_client.get_schedule_handle(first).describe()).schedule.state.paused

    # An edit updates the kept entry and deletes the dropped one.
    r = await _patch(
        api_client, org, pipeline_id, {"triggers": {"schedule": [{"cron": "*/15 * * * *"}]}}
    )
    assert r.status_code == 200, r.text
    described = await temporal_client.get_schedule_handle(first).describe()
    assert described.schedule.spec.calendars[0].minute == (ScheduleRange(0, 59, 15),)
    assert described.schedule.spec.time_zone_name == "UTC"
    assert not await _exists(temporal_client, second)

    # A pipeline with a run in progress is not deleted; once it is finished, the pipeline goes
    # and its schedules with it.
    r = await api_client.delete(f"/v1/pipelines/{pipeline_id}", headers=org.headers)
    assert r.status_code == 409, r.text
    assert await _exists(temporal_client, first)
    await temporal_client.get_workflow_handle(f"pipeline-run-{run.id}").terminate("test")
    async with session_maker() as session, session.begin():
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run.id).values(status="cancelled")
        )
    r = await api_client.delete(f"/v1/pipelines/{pipeline_id}", headers=org.headers)
    assert r.status_code == 204, r.text
    assert not await _exists(temporal_client, first)
    assert (
        await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)
    ).status_code == 404


async def test_concurrent_edits_leave_the_schedules_as_stored(
    api_client, session_maker, settings: Settings, temporal_client: Client
) -> None:
    org, pipeline_id = await _pipeline(session_maker, settings)
    bodies = [
        {"triggers": {"schedule": [{"cron": f"{minute} * * * *"}] * (1 + minute % 3)}}
        for minute in range(8)
    ]
    replies = await asyncio.gather(*(_patch(api_client, org, pipeline_id, b) for b in bodies))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    stored = (await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)).json()
    assert stored["version"] == 1 + len(bodies)
    entries = stored["triggers"]["schedule"]
    for index, entry in enumerate(entries):
        described = await temporal_client.get_schedule_handle(
            pipeline_schedule_id(str(pipeline_id), index)
        ).describe()
        minute = int(entry["cron"].split()[0])
        assert described.schedule.spec.calendars[0].minute == (ScheduleRange(minute),)
    assert not await _exists(temporal_client, pipeline_schedule_id(str(pipeline_id), len(entries)))
    await schedules.delete_schedules(temporal_client, pipeline_id)


async def test_a_retried_or_racing_firing_starts_one_run(
    session_maker, settings: Settings, temporal_client: Client, task_queue: str
) -> None:
    _, pipeline_id = await _pipeline(session_maker, settings)
    async with session_maker() as session, session.begin():
        await session.execute(
            update(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .values(triggers={"schedule": [{"cron": "@daily"}]})
        )
    inp = ScheduledRunInput(
        pipeline_id=str(pipeline_id),
        schedule_id=pipeline_schedule_id(str(pipeline_id), 0),
        firing_id=f"scheduled-run-{pipeline_id}-0-2026-01-01T00:00:00Z",
    )
    results = await asyncio.gather(
        *(
            schedules.start_scheduled_run(
                session_maker, temporal_client, settings, inp, run_task_queue=task_queue
            )
            for _ in range(10)
        )
    )
    assert len({r.run_id for r in results}) == 1
    [run] = await runs_of(session_maker, [pipeline_id])
    assert run.trigger == "schedule"
    # A firing left behind by a deleted pipeline starts nothing.
    gone = inp.model_copy(update={"pipeline_id": str(uuid.uuid4()), "firing_id": "other"})
    result = await schedules.start_scheduled_run(
        session_maker, temporal_client, settings, gone, run_task_queue=task_queue
    )
    assert result.run_id is None and result.skipped == "the pipeline no longer exists"
    # A schedule left behind for an entry the pipeline no longer has starts nothing either.
    stray = inp.model_copy(
        update={"schedule_id": pipeline_schedule_id(str(pipeline_id), 5), "firing_id": "stray"}
    )
    result = await schedules.start_scheduled_run(
        session_maker, temporal_client, settings, stray, run_task_queue=task_queue
    )
    assert result.skipped == "the pipeline no longer has this schedule"
    assert len(await runs_of(session_maker, [pipeline_id])) == 1
    await temporal_client.get_workflow_handle(f"pipeline-run-{run.id}").terminate("test")


async def test_an_edit_repairs_schedules_a_crashed_sync_left_behind(
    api_client, session_maker, settings: Settings, temporal_client: Client
) -> None:
    """A sync that died half-way (a schedule created for an entry the row no longer has, one
    missing for an entry it has): the next edit leaves exactly what is stored."""
    org, pipeline_id = await _pipeline(session_maker, settings)
    async with session_maker() as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
    pipeline.triggers = {"schedule": [{"cron": "5 * * * *"}] * 4}
    await schedules.sync_schedules(temporal_client, pipeline)
    await temporal_client.get_schedule_handle(pipeline_schedule_id(str(pipeline_id), 1)).delete()
    r = await _patch(
        api_client, org, pipeline_id, {"triggers": {"schedule": [{"cron": "7 * * * *"}] * 2}}
    )
    assert r.status_code == 200, r.text
    for index in (0, 1):
        described = await temporal_client.get_schedule_handle(
            pipeline_schedule_id(str(pipeline_id), index)
        ).describe()
        assert described.schedule.spec.calendars[0].minute == (ScheduleRange(7),)
    for index in (2, 3):
        assert not await _exists(temporal_client, pipeline_schedule_id(str(pipeline_id), index))
    await schedules.delete_schedules(temporal_client, pipeline_id)


async def test_worker_start_creates_schedules_of_pipelines_written_without_the_api(
    session_maker, settings: Settings, temporal_client: Client
) -> None:
    _, pipeline_id = await _pipeline(session_maker, settings)
    async with session_maker() as session, session.begin():
        await session.execute(
            update(Pipeline)
            .where(Pipeline.id == pipeline_id)
            .values(triggers={"schedule": [{"cron": "@daily", "timezone": "Asia/Tokyo"}]})
        )
    assert await schedules.ensure_pipeline_schedules(temporal_client, session_maker) >= 1
    described = await temporal_client.get_schedule_handle(
        pipeline_schedule_id(str(pipeline_id), 0)
    ).describe()
    assert described.schedule.spec.time_zone_name == "Asia/Tokyo"
    await schedules.delete_schedules(temporal_client, pipeline_id)
