"""Runs announce their outcome: run.failed, then run.fixed for the first green run after a red
one on the same pipeline and branch, and nothing for a green run after a green one. A receiver
that is down does not fail or hold up the run that caused the event."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from forgeline.settings import Settings
from tests.factories import OrgFixture, make_org
from tests.notifications.support import Receiver, notification_outcome
from tests.runs.helpers import create_run, make_pipeline, pipeline_worker, stage, start
from tests.runs.sandbox import sandbox_runner
from workflows.notifications_models import NotificationOutcome, notification_workflow_id


async def outcome(client: Client, key: str) -> NotificationOutcome:
    found: NotificationOutcome = await notification_outcome(client, key)
    return found


async def never_started(client: Client, key: str) -> bool:
    try:
        await client.get_workflow_handle(notification_workflow_id(key)).describe()
    except RPCError:
        return True
    return False


class Runs:
    def __init__(self, client: Client, settings: Settings, sessions: Any, org: OrgFixture,
                 queue: str, pipeline_id: uuid.UUID) -> None:  # fmt: skip
        self.client, self.settings, self.sessions = client, settings, sessions
        self.org, self.queue, self.pipeline_id = org, queue, pipeline_id

    async def run(self, outcome: str, branch: str = "main") -> tuple[uuid.UUID, str]:
        run = await create_run(
            self.sessions,
            self.settings,
            self.org.org_id,
            self.pipeline_id,
            branch=branch,
            variables=[{"name": "OUTCOME", "value": outcome}],
        )
        handle = await start(self.client, run, self.queue)
        return run.id, (await handle.result()).status


async def setup(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], url: str
) -> tuple[OrgFixture, uuid.UUID]:
    org = await make_org(sessions)
    response = await api.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": ["run.failed", "run.fixed"]},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    pipeline_id = await make_pipeline(
        sessions, org.org_id, [stage("test", 'test "$OUTCOME" = pass')]
    )
    return org, pipeline_id


async def test_failed_then_fixed(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    receiver: Receiver,
    task_queue: str,
    tmp_path: Path,
) -> None:
    org, pipeline_id = await setup(api_client, session_maker, receiver.url)
    runs = Runs(temporal_client, notify_settings, session_maker, org, task_queue, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, notify_settings, session_maker, runner):
        red, status = await runs.run("fail")
        assert status == "failed"
        assert (await outcome(temporal_client, f"run.failed:{red}")).failed == 0
        other_branch, status = await runs.run("pass", branch="feature")
        green, status = await runs.run("pass")
        assert status == "success"
        assert (await outcome(temporal_client, f"run.fixed:{green}")).failed == 0
        still_green, _ = await runs.run("pass")
    await runner.close()
    # Green after green, or the first run of another branch: nothing to tell.
    assert await never_started(temporal_client, f"run.fixed:{still_green}")
    assert await never_started(temporal_client, f"run.fixed:{other_branch}")
    sent = [json.loads(r.body) for r in receiver.requests]
    assert [(d["type"], d["data"]["run_id"]) for d in sent] == [
        ("run.failed", str(red)),
        ("run.fixed", str(green)),
    ]
    assert sent[0]["data"]["branch"] == "main" and sent[0]["data"]["status"] == "failed"

    inbox = (await api_client.get("/v1/notifications", headers=org.headers)).json()
    assert [n["type"] for n in inbox["items"]] == ["run.fixed", "run.failed"]
    assert inbox["unread_count"] == 2


async def test_a_receiver_down_never_fails_the_run(
    api_client: httpx.AsyncClient,
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    notify_settings: Settings,
    notifications: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    down = Receiver()
    down.close()
    org, pipeline_id = await setup(api_client, session_maker, down.url)
    runs = Runs(temporal_client, notify_settings, session_maker, org, task_queue, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, notify_settings, session_maker, runner):
        red, status = await runs.run("fail")
        assert status == "failed"
        green, status = await runs.run("pass")
        assert status == "success"
    await runner.close()
    # The webhook gave up after its retries; the runs ended as their stages did.
    assert (await outcome(temporal_client, f"run.failed:{red}")).failed == 1
    assert (await outcome(temporal_client, f"run.fixed:{green}")).failed == 1
