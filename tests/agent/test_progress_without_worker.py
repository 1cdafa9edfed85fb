"""An agent task's detail while no agent worker is up: the live-progress query is bounded by its
RPC timeout and the answer falls back to the stored task (`live: null`), for several readers at
once. Real API, PostgreSQL and Temporal (the task's workflow exists; nobody polls its queue)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import make_project
from tests.factories import make_org

pytestmark = pytest.mark.timeout(120)
# Not a performance bound: an unbounded query waits for a worker for ever; this keeps a hang
# from passing.
HANG = 30.0


async def test_task_detail_without_a_worker_answers_from_the_stored_task(
    api_client, temporal_client, session_maker, tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    repo = write_repo(CORPUS[0], tmp_path, git=True)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={"task_type": "generate_pipeline", "input_data": {"branch": "main"}},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    task = resp.json()
    handle = temporal_client.get_workflow_handle(task["workflow_id"])
    try:
        # The workflow was started: the query reaches Temporal and finds no worker to answer.
        assert (await handle.describe()).run_id

        async def detail() -> dict[str, object]:
            got = await api_client.get(f"/v1/agent-tasks/{task['id']}", headers=org.headers)
            assert got.status_code == 200, got.text
            body: dict[str, object] = got.json()
            return body

        answers = await asyncio.wait_for(asyncio.gather(*(detail() for _ in range(3))), HANG)
        for body in answers:
            assert body["id"] == task["id"]
            assert body["status"] == "pending"
            assert body["live"] is None
        # Cancelling without a worker is bounded too, and the stored task records it.
        cancelled = await asyncio.wait_for(
            api_client.post(f"/v1/agent-tasks/{task['id']}/cancel", headers=org.headers), HANG
        )
        assert cancelled.status_code in (200, 202), cancelled.text
    finally:
        with contextlib.suppress(Exception):
            await handle.terminate("test over")
