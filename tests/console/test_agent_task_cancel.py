"""Following a verifying generation from the console while it runs: the task page shows the live
phase and the verification run under way, and its cancel button (CSRF-checked) ends the task
and the run it started; the page then says cancelled and stops polling."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.pipelines import PipelineRun
from forgeline.settings import Settings
from tests.agent.support import make_project, verifying_workers
from tests.agent.verify_repos import WAITS, node_repo
from tests.console.helpers import csrf_of, sign_in
from tests.factories import make_org
from tests.runs.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def workers(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[None]:
    async with verifying_workers(
        temporal_client, settings, session_maker, tmp_path / "runner-state"
    ):
        yield


async def test_live_phase_and_run_then_cancel_from_the_task_page(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    workers: None,
    tmp_path: Path,
) -> None:
    org = await make_org(session_maker)
    project = await make_project(session_maker, org.org_id, str(node_repo(tmp_path / "r", WAITS)))
    await sign_in(api_client, org)
    token = csrf_of((await api_client.get(f"/projects/{project}")).text)
    answer = await api_client.post(
        f"/projects/{project}/agent-tasks", data={"csrf": token, "verify": "on"}
    )
    assert answer.status_code == 303, answer.text
    task_url = answer.headers["location"]
    page: dict[str, str] = {}

    async def verifying() -> bool:
        page["html"] = html.unescape((await api_client.get(task_url)).text)
        return "verifying (run 1 of 3)" in page["html"] and "status-running" in page["html"]

    await wait_for(verifying, timeout=150, interval=1.0)
    text = page["html"]
    assert 'hx-trigger="every 2s"' in text and "Verdict" not in text
    run = re.search(r'href="/runs/([0-9a-f-]{36})">Run #1 \(live logs\)', text)
    assert run is not None, text
    # A cross-site cancel is refused; the task goes on.
    forged = await api_client.post(f"{task_url}/cancel", data={"csrf": "0" * 64})
    assert forged.status_code == 403
    assert "Cancel the task" in (await api_client.get(task_url)).text
    cancelled = await api_client.post(f"{task_url}/cancel", data={"csrf": csrf_of(text)})
    assert cancelled.status_code == 303

    async def ended() -> bool:
        page["html"] = html.unescape((await api_client.get(task_url)).text)
        return "status-cancelled" in page["html"] and "hx-trigger" not in page["html"]

    await wait_for(ended, timeout=120, interval=1.0)
    assert "Cancel the task" not in page["html"]

    async def run_cancelled() -> bool:
        async with session_maker() as session:
            status = await session.scalar(
                select(PipelineRun.status).where(PipelineRun.id == run.group(1))
            )
        return status == "cancelled"

    await wait_for(run_cancelled, timeout=60, interval=0.5)
    again = await api_client.post(f"{task_url}/cancel", data={"csrf": csrf_of(page["html"])})
    assert again.status_code == 409  # already cancelled: said so, nothing changes
