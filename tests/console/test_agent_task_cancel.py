"""Following a verifying generation from the console while it runs: the task page shows the live
phase and the verification run under way, and its cancel button (CSRF-checked) ends the task
and the run it started; the page then says cancelled and stops polling."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.pipelines import PipelineRun
from tests.agent.verify_repos import WAITS, node_repo
from tests.console.helpers import csrf_of, page_until, signed_in_project, submit_generation
from tests.runs.helpers import wait_for

pytestmark = pytest.mark.timeout(240)


async def test_live_phase_and_run_then_cancel_from_the_task_page(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    workers: None,
    tmp_path: Path,
) -> None:
    _, project = await signed_in_project(
        api_client, session_maker, node_repo(tmp_path / "r", WAITS)
    )
    answer = await submit_generation(api_client, project, verify="on")
    assert answer.status_code == 303, answer.text
    task_url = answer.headers["location"]
    text = await page_until(
        api_client,
        task_url,
        lambda t: "verifying (run 1 of 3)" in t and "status-running" in t,
        timeout=150,
    )
    assert 'hx-trigger="every 2s"' in text and "Verdict" not in text
    run = re.search(r'href="/runs/([0-9a-f-]{36})">Run #1 \(live logs\)', text)
    assert run is not None, text
    # A cross-site cancel is refused; the task goes on.
    forged = await api_client.post(f"{task_url}/cancel", data={"csrf": "0" * 64})
    assert forged.status_code == 403
    assert "Cancel the task" in (await api_client.get(task_url)).text
    cancelled = await api_client.post(f"{task_url}/cancel", data={"csrf": csrf_of(text)})
    assert cancelled.status_code == 303
    ended = await page_until(
        api_client,
        task_url,
        lambda t: "status-cancelled" in t and "hx-trigger" not in t,
        timeout=120,
    )
    assert "Cancel the task" not in ended

    async def run_cancelled() -> bool:
        async with session_maker() as session:
            status = await session.scalar(
                select(PipelineRun.status).where(PipelineRun.id == run.group(1))
            )
        return status == "cancelled"

    await wait_for(run_cancelled, timeout=60, interval=0.5)
    again = await api_client.post(f"{task_url}/cancel", data={"csrf": csrf_of(ended)})
    assert again.status_code == 409  # already cancelled: said so, nothing changes
