"""A pipeline's schedule fires on its own, by its cron, with nobody triggering it: the Temporal
Schedule the API made starts a run with trigger=schedule at the next minute's turn, then again
at the one after (one run per firing). And the times it will fire are the cron's in the entry's
time zone, daylight saving included, as the server computes them.

On the dev server: Temporal's time-skipping test server does not implement Schedules
(CreateSchedule answers "unimplemented"), so the firing waits for the real minute (at most one
minute and a bit)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import Client

from forgeline.settings import Settings
from tests.integrations.support import integrations_worker, runs_of
from tests.integrations.test_schedules import _patch, _pipeline
from tests.runs.helpers import wait_for
from workflows.integrations_models import pipeline_schedule_id


@pytest.fixture
async def worker(
    temporal_client: Client, settings: Settings, session_maker: Any, task_queue: str
) -> Any:
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue=task_queue
    ) as w:
        yield w


async def test_an_every_minute_schedule_fires_by_itself(
    api_client: Any, session_maker: Any, settings: Settings, temporal_client: Client, worker: Any
) -> None:
    org, pipeline_id = await _pipeline(session_maker, settings)
    schedule_id = pipeline_schedule_id(str(pipeline_id), 0)
    r = await _patch(
        api_client, org, pipeline_id, {"triggers": {"schedule": [{"cron": "* * * * *"}]}}
    )
    assert r.status_code == 200, r.text
    try:

        async def fired() -> bool:
            runs = await runs_of(session_maker, [pipeline_id])
            return len(runs) >= 1

        await wait_for(fired, timeout=75, interval=0.5)
        [run] = await runs_of(session_maker, [pipeline_id])
        assert run.trigger == "schedule"
        assert run.metadata_["schedule"]["schedule_id"] == schedule_id
        described = await temporal_client.get_schedule_handle(schedule_id).describe()
        [action] = described.info.recent_actions
        # Fired at a minute's turn by the server's own clock, not by a trigger.
        assert action.scheduled_at.second == 0 and action.scheduled_at.microsecond == 0
        assert described.info.num_actions == 1
    finally:
        await temporal_client.get_schedule_handle(schedule_id).delete()


async def test_the_firing_times_follow_the_cron_in_its_time_zone(
    api_client: Any, session_maker: Any, settings: Settings, temporal_client: Client
) -> None:
    org, pipeline_id = await _pipeline(session_maker, settings)
    schedule_id = pipeline_schedule_id(str(pipeline_id), 0)
    r = await _patch(
        api_client,
        org,
        pipeline_id,
        {"triggers": {"schedule": [{"cron": "30 3 * * mon-fri", "timezone": "Europe/Paris"}]}},
    )
    assert r.status_code == 200, r.text
    try:
        described = await temporal_client.get_schedule_handle(schedule_id).describe()
        upcoming = described.info.next_action_times
        assert len(upcoming) >= 5
        paris = ZoneInfo("Europe/Paris")
        now = datetime.now(UTC)
        for when in upcoming:
            local = when.astimezone(paris)
            # 03:30 in Paris whatever the UTC offset of that day (CET or CEST), weekdays only.
            assert (local.hour, local.minute, local.second) == (3, 30, 0), when
            assert local.weekday() < 5, when
            assert when > now
        assert len({when.date() for when in upcoming}) == len(upcoming)
    finally:
        await temporal_client.get_schedule_handle(schedule_id).delete()


def test_the_schedule_id_names_the_pipeline_and_entry() -> None:
    pipeline = uuid.uuid4()
    assert pipeline_schedule_id(str(pipeline), 3) == f"pipeline-schedule-{pipeline}-3"
