"""Commit statuses on a local fake GitHub and GitLab (real HTTP servers) for runs started by
signed pushes, on real Postgres, Temporal, git and the sandbox runner: pending, running, then
success or failure under one context per pipeline with a link to the run; a forge that answers
500 or rate-limits (403 + Retry-After / X-RateLimit-*) never fails the run, and the status
arrives later."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from core.integrations.commit_status import announce_run_status
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.fake_forge import Failure, FakeForge
from tests.integrations.stage_gate import WAIT, open_gate, run_executor
from tests.integrations.support import (
    Connected,
    commit,
    connect_project,
    finished,
    integrations_worker,
    make_git_repo,
    push_main,
    repo_with_change,
    reported,
    run_workers,
    runs_of,
    the_run,
)
from tests.runs.helpers import run_row, wait_for

TOKEN = "ghp_" + "T" * 36


async def final_state(forge: FakeForge, sha: str, state: str, timeout: float = 60) -> None:
    async def arrived() -> bool:
        states = forge.states(sha)
        return bool(states) and states[-1][1] == state

    try:
        await wait_for(arrived, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{sha}: last status not {state}: {forge.states(sha)}") from None


async def release_when_running(
    forge: FakeForge, session_maker: Any, settings: Settings, connected: Connected, head: str
) -> None:
    """Once the forge has the running report, let the run's waiting stage end."""
    await reported(forge, head, "Running")
    (run,) = await runs_of(session_maker, connected.pipeline_ids)
    await open_gate(session_maker, settings, run.id)


@pytest.mark.parametrize(
    ("command", "run_status", "state"),
    [
        (f"{WAIT}; echo ok", "success", "success"),
        (f"{WAIT}; exit 3", "failed", "failure"),
    ],
)
async def test_github_status_sequence(
    api_client,
    temporal_client,
    forge,
    forge_settings,
    session_maker,
    tmp_path,
    task_queue,
    command,
    run_status,
    state,
) -> None:
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        forge_settings,
        {"src/app.py": "print(3)\n"},
        token=TOKEN,
        pipelines=[{"on_push": {"branches": ["main"]}}],
        stages=[{"name": "check", "run": command}],
    )
    async with integrations_worker(
        temporal_client, forge_settings, session_maker, run_task_queue=task_queue
    ):
        await push_main(api_client, connected, head, first)
        await reported(forge, head, "Queued")
        async with run_executor(
            temporal_client, forge_settings, session_maker, task_queue, tmp_path
        ):
            await release_when_running(forge, session_maker, forge_settings, connected, head)
            run = await finished(session_maker, connected)
            await final_state(forge, head, state)
    assert run.status == run_status
    assert forge.states(head) == [("forgeline/ci-0", s) for s in ("pending", "pending", state)]
    requests = forge.accepted(head)
    assert [r.path for r in requests] == [f"/repos/acme/widgets/statuses/{head}"] * 3
    final = "Passed" if state == "success" else "Failed"
    assert [r.body["description"] for r in requests] == ["Queued", "Running", final]
    assert all(r.headers["authorization"] == f"token {TOKEN}" for r in requests)
    assert all(r.body["target_url"].endswith(f"/v1/runs/{run.id}") for r in requests)
    # Announcing the same state again (a retried activity) sends nothing more.
    await announce_run_status(
        temporal_client,
        session_maker,
        str(run.id),
        task_queue=forge_settings.integrations_task_queue,
    )
    assert len(forge.accepted(head)) == 3


async def test_forge_outage_and_rate_limit_never_fail_the_run(
    api_client, temporal_client, forge, forge_settings, session_maker, tmp_path, task_queue
) -> None:
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        forge_settings,
        {"src/app.py": "print(4)\n"},
        token=TOKEN,
        pipelines=[{"on_push": {}}],
    )
    reset = str(int(time.time()) + 2)
    forge.fail_next(
        Failure(500, body={"message": "Server Error"}),
        Failure(403, {"Retry-After": "1"}, {"message": "You have exceeded a secondary rate limit"}),
        Failure(
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
            {"message": "API rate limit exceeded"},
        ),
        Failure(502),
        Failure(429, {"Retry-After": "1"}),
    )
    async with run_workers(temporal_client, forge_settings, session_maker, task_queue, tmp_path):
        await push_main(api_client, connected, head, first)
        run = await finished(session_maker, connected)
        assert run.status == "success"  # whatever the forge said
        await final_state(forge, head, "success")
    answered = [r.answered for r in forge.received]
    assert answered[:5] == [500, 403, 403, 502, 429]
    # Reports only move forward: whatever arrived, the last one is the run's final state.
    assert forge.states(head)[-1] == ("forgeline/ci-0", "success")
    assert (await run_row(session_maker, run.id)).status == "success"


async def test_gitlab_statuses_and_missing_token(
    api_client, temporal_client, forge, forge_settings, session_maker, tmp_path, task_queue
) -> None:
    repo, first = make_git_repo(tmp_path)
    head = commit(repo, {"src/app.py": "print(5)\n"})
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        forge_settings,
        org.org_id,
        url=str(repo),
        token="glpat-" + "x" * 20,
        pipelines=[{"on_push": {}}],
        stages=[{"name": "check", "run": f"{WAIT}; echo ok"}],
    )
    untokened = await connect_project(
        session_maker,
        forge_settings,
        org.org_id,
        url=str(repo),
        pipelines=[{"on_push": {}}],
    )
    payload = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "before": first,
        "after": head,
        "project": {"path_with_namespace": "group/sub/widgets", "git_http_url": "https://gl/x"},
    }
    body = json.dumps(payload).encode()
    async with integrations_worker(
        temporal_client, forge_settings, session_maker, run_task_queue=task_queue
    ):
        for target in (connected, untokened):
            r = await api_client.post(
                f"/v1/webhooks/gitlab?repository={target.repository_id}",
                content=body,
                headers={
                    "X-Gitlab-Event": "Push Hook",
                    "X-Gitlab-Token": target.secret,
                    "X-Gitlab-Event-UUID": str(uuid.uuid4()),
                },
            )
            assert r.status_code == 202, r.text
        await reported(forge, head, "Queued")
        async with run_executor(
            temporal_client, forge_settings, session_maker, task_queue, tmp_path
        ):
            await release_when_running(forge, session_maker, forge_settings, connected, head)
            run = await finished(session_maker, connected)
            await finished(session_maker, untokened)
            await final_state(forge, head, "success")
    assert run.status == "success"
    requests = forge.accepted(head)
    assert {r.path for r in requests} == {f"/api/v4/projects/group%2Fsub%2Fwidgets/statuses/{head}"}
    assert [r.body["state"] for r in requests] == ["pending", "running", "success"]
    assert all(r.headers["private-token"].startswith("glpat-") for r in requests)
    assert all(r.body["name"] == "forgeline/ci-0" for r in requests)


async def test_cancelled_run_reports_cancelled(
    api_client, temporal_client, forge, forge_settings, session_maker, tmp_path, task_queue
) -> None:
    from core.runs.service import cancel_run

    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        forge_settings,
        {"src/app.py": "print(6)\n"},
        token=TOKEN,
        pipelines=[{"on_push": {}}],
        stages=[{"name": "long", "run": "sleep 120"}],
    )
    async with run_workers(temporal_client, forge_settings, session_maker, task_queue, tmp_path):
        await push_main(api_client, connected, head, first)
        await reported(forge, head, "Running")
        run = await the_run(session_maker, connected)
        await cancel_run(temporal_client, run)
        run = await finished(session_maker, connected)
        await final_state(forge, head, "error")
    assert run.status == "cancelled"
    assert [r.body["description"] for r in forge.accepted(head)] == [
        "Queued",
        "Running",
        "Cancelled",
    ]
