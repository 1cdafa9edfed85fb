"""Generating a pipeline from the console: the project's form (CSRF-checked, only for roles that
may create pipelines) starts the agent task the API would, and the task page follows it to its
verdict, with the verification run linked. A double submit makes at most two tasks, each with
its own workflow, as the API would."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.deps import get_temporal
from db.models.agent import AgentTask
from db.models.operations import WorkflowExecution
from tests.agent.support import make_project
from tests.agent.verify_repos import FAILS, NEEDS_ENV, node_repo
from tests.console.helpers import (
    csrf_of,
    page_until,
    sign_in,
    signed_in_project,
    submit_generation,
)
from tests.factories import make_org
from tests.runs.helpers import wait_for

pytestmark = pytest.mark.timeout(240)
_TASK = re.compile(r"/agent-tasks/([0-9a-f-]{36})$")


async def _tasks(session_maker: async_sessionmaker[AsyncSession], project: uuid.UUID) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(AgentTask).where(AgentTask.project_id == project)
        )
    return int(count or 0)


async def test_generate_with_verification_reaches_the_failing_verdict(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    workers: None,
    tmp_path: Path,
) -> None:
    _, project = await signed_in_project(
        api_client, session_maker, node_repo(tmp_path / "r", FAILS)
    )
    overview = await api_client.get(f"/projects/{project}")
    assert 'action="/projects/' in overview.text and "Generate pipeline" in overview.text
    answer = await submit_generation(api_client, project, verify="on")  # lint, scan off: offline
    assert answer.status_code == 303, answer.text
    match = _TASK.search(answer.headers["location"])
    assert match is not None
    task_url = f"/agent-tasks/{match.group(1)}"
    first = await api_client.get(task_url)
    assert first.status_code == 200 and "verified by running it" in first.text
    text = await page_until(api_client, task_url, lambda t: "Verdict" in t, timeout=200)
    assert "hx-trigger" not in text  # finished: the page stops polling
    assert "Not verified" in text and "Failing stage" in text
    assert "<dd>test</dd>" in text and "<dd>code</dd>" in text
    assert "arithmetic is broken" in text
    assert re.search(r'href="/runs/[0-9a-f-]{36}">Run #1 \(live logs\)', text)
    assert "Proposed stages" in text and "<li>test</li>" in text
    # The API tells the same story about the same task.
    async with session_maker() as session:
        row = await session.get(AgentTask, uuid.UUID(match.group(1)))
        assert row is not None and row.input_data["verify"] is True
        assert row.output_data is not None
        assert row.output_data["verification"]["failed_stage"] == "test"


async def _generated(client: httpx.AsyncClient, project: uuid.UUID, attempts: str) -> str:
    """Submit the form (verify on, lint and scan off); the task page once it has a verdict."""
    answer = await submit_generation(client, project, verify="on", attempts=attempts)
    assert answer.status_code == 303, answer.text
    return await page_until(
        client, answer.headers["location"], lambda t: "Verdict" in t, timeout=200
    )


async def test_a_repaired_pipeline_is_verified_and_a_spent_budget_said_so(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    workers: None,
    tmp_path: Path,
) -> None:
    org = await make_org(session_maker)
    await sign_in(api_client, org)
    env = {".env.defaults": "GREETING=hello\n"}
    repaired, spent = [
        await make_project(
            session_maker, org.org_id, str(node_repo(tmp_path / name, NEEDS_ENV, **env))
        )
        for name in ("repaired", "spent")
    ]
    text = await _generated(api_client, repaired, "3")
    green = re.search(
        r'Verified</strong>: the pipeline ran green in <a href="/runs/([0-9a-f-]+)"', text
    )
    assert green is not None, text
    assert "after 2 runs" in text and ".env.defaults" in text  # the repair is listed
    assert text.count("(live logs)") == 2
    assert (await api_client.get(f"/runs/{green.group(1)}")).status_code == 200
    text = await _generated(api_client, spent, "1")
    assert "Not verified</strong>: attempt budget spent" in text
    assert "<dd>config</dd>" in text and ".env.defaults" in text
    assert text.count("(live logs)") == 1


async def test_hostile_and_unauthorised_generation_is_refused(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    viewer = await make_org(session_maker, role="viewer")
    other = await make_org(session_maker)
    project = await make_project(session_maker, viewer.org_id, "/nonexistent/repo")
    theirs = await make_project(session_maker, other.org_id, "/nonexistent/repo")
    await sign_in(api_client, viewer)
    overview = await api_client.get(f"/projects/{project}")
    assert overview.status_code == 200 and "Generate pipeline" not in overview.text
    token = csrf_of(overview.text)
    denied = await api_client.post(f"/projects/{project}/agent-tasks", data={"csrf": token})
    assert denied.status_code == 403
    for target in ("not-a-uuid", "../../v1", str(theirs), "%00"):
        answer = await api_client.post(f"/projects/{target}/agent-tasks", data={"csrf": token})
        assert answer.status_code in (403, 404), (target, answer.status_code)
    owner = await make_org(session_maker)
    mine = await make_project(session_maker, owner.org_id, "/nonexistent/repo")
    api_client.cookies.clear()
    await sign_in(api_client, owner)
    token = csrf_of((await api_client.get(f"/projects/{mine}")).text)
    for attempts in ("0", "11", "-1", "1e3", "9" * 5000, "٣٣٣", "<b>"):
        form = {"csrf": token, "verify": "on", "attempts": attempts}
        answer = await api_client.post(f"/projects/{mine}/agent-tasks", data=form)
        assert answer.status_code == 422, (attempts[:10], answer.status_code)
        assert "whole number from 1 to 10" in answer.text and "<b>" not in answer.text
    assert await _tasks(session_maker, mine) == 0
    assert (await api_client.get("/agent-tasks/not-a-uuid")).status_code == 404
    assert (await api_client.get(f"/agent-tasks/{uuid.uuid4()}")).status_code == 404
    assert await _tasks(session_maker, project) == 0
    assert await _tasks(session_maker, theirs) == 0


async def test_a_concurrent_double_submit_makes_two_serialized_tasks_at_most(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    workers: None,
    tmp_path: Path,
) -> None:
    _, project = await signed_in_project(
        api_client, session_maker, node_repo(tmp_path / "r", FAILS)
    )
    token = csrf_of((await api_client.get(f"/projects/{project}")).text)
    form = {"csrf": token, "lint": "on"}  # generate without verification
    answers = await asyncio.gather(
        *(api_client.post(f"/projects/{project}/agent-tasks", data=form) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [303, 303]
    urls = {a.headers["location"] for a in answers}
    assert 1 <= len(urls) <= 2 and await _tasks(session_maker, project) == len(urls)
    async with session_maker() as session:
        started = await session.scalar(
            select(func.count())
            .select_from(WorkflowExecution)
            .where(WorkflowExecution.project_id == project, WorkflowExecution.kind == "agent_task")
        )
    assert started == len(urls)  # every task has its own workflow; none is left unstarted
    for url in urls:

        async def done(url: str = url) -> bool:
            return "Proposed stages" in (await api_client.get(url)).text

        await wait_for(done, timeout=200, interval=1.0)
        text = (await api_client.get(url)).text
        assert "not verified by a run" in text and "Verdict" not in text


async def test_a_refused_workflow_start_is_a_503_and_a_failed_task_on_its_page(
    app: Any,
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    """Temporal refuses the start (a namespace it does not know) after the intent row was
    committed: the form answers 503 and the task is closed as failed, not left pending."""
    _, project = await signed_in_project(
        api_client, session_maker, node_repo(tmp_path / "r", FAILS)
    )
    refusing = Client(
        temporal_client.service_client,
        namespace=f"missing-{uuid.uuid4().hex}",
        data_converter=temporal_client.data_converter,
    )
    app.dependency_overrides[get_temporal] = lambda: refusing
    try:
        answer = await submit_generation(api_client, project, verify="on")
    finally:
        app.dependency_overrides.pop(get_temporal, None)
    assert answer.status_code == 503 and "the task was not started" in answer.text
    async with session_maker() as session:
        task = await session.scalar(select(AgentTask).where(AgentTask.project_id == project))
    assert task is not None and task.status == "failed"
    shown = html.unescape((await api_client.get(f"/agent-tasks/{task.id}")).text)
    assert "The task failed: the workflow could not be started" in shown
    assert "hx-trigger" not in shown
