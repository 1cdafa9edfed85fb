"""Check runs on a fake GitHub (real HTTP server) for repositories connected through the GitHub
App, on real Postgres, Temporal, git and the sandbox runner: one check run per run, queued then
in_progress then completed, with the failed stages and their (masked, bounded) log tail; a rate
limit never fails the run; installation tokens are minted per use and stored nowhere."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from forgeline.settings import Settings
from tests.integrations.fake_forge import Failure
from tests.integrations.fake_github_app import FakeGitHubApp
from tests.integrations.stage_gate import WAIT, open_gate
from tests.integrations.support import (
    Connected,
    connect_through_app,
    push_main,
    repo_with_change,
    run_workers,
    runs_of,
)
from tests.runs.helpers import wait_for


async def completed(app: FakeGitHubApp, conclusion: str) -> None:
    async def done() -> bool:
        runs = list(app.check_runs.values())
        return bool(runs) and app.sequence(runs[0].id)[-1] == ("completed", conclusion)

    await wait_for(done, timeout=60)


async def release_when_in_progress(
    app: FakeGitHubApp, session_maker: Any, settings: Settings, connected: Connected
) -> None:
    """Once the check run shows the run in progress, let its waiting stage end."""

    async def in_progress() -> bool:
        return any(("in_progress", None) in app.sequence(c) for c in list(app.check_runs))

    await wait_for(in_progress, timeout=60)
    (run,) = await runs_of(session_maker, connected.pipeline_ids)
    await open_gate(session_maker, settings, run.id)


@pytest.mark.parametrize(
    ("command", "conclusion"),
    [(f"{WAIT}; echo ok", "success"), (f"{WAIT}; echo boom-line; exit 3", "failure")],
)
async def test_check_run_sequence(
    api_client,
    temporal_client,
    forge,
    app_forge,
    app_settings,
    session_maker,
    tmp_path,
    task_queue,
    command,
    conclusion,
    installation,
) -> None:
    app, _ = app_forge
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        app_settings,
        {"src/app.py": "print(3)\n"},
        pipelines=[{"on_push": {"branches": ["main"]}}],
        stages=[{"name": "check", "run": command}],
    )
    await connect_through_app(session_maker, connected, installation)
    async with run_workers(temporal_client, app_settings, session_maker, task_queue, tmp_path):
        await push_main(api_client, connected, head, first)
        await release_when_in_progress(app, session_maker, app_settings, connected)
        await completed(app, conclusion)
    (check,) = app.check_runs.values()
    (run,) = await runs_of(session_maker, connected.pipeline_ids)
    assert check.repository == "acme/widgets"
    assert check.fields["head_sha"] == head
    assert check.fields["name"] == "forgeline/ci-0"
    assert check.fields["external_id"] == str(run.id)
    assert check.fields["details_url"].endswith(f"/v1/runs/{run.id}")
    # Created by the first report that is not stale (queued, unless the run was running
    # already), moved forward only, completed last.
    sequence = app.sequence(check.id)
    assert sequence[-1] == ("completed", conclusion)
    assert sequence[:-1] in ([("queued", None), ("in_progress", None)], [("in_progress", None)])
    final = check.updates[-1]["output"]
    if conclusion == "failure":
        assert "| check | failed | 3 |" in final["summary"]
        assert "boom-line" in final["text"]
        assert len(final["text"]) < 5_000
    else:
        assert final["title"] == "All stages passed"
        assert "text" not in final
    # No commit status is sent for an App repository: the check run is the report.
    assert not [r for r in forge.accepted() if "/statuses/" in r.path]
    # A token per report, never stored: not in the run, its delivery or any workflow history.
    # One token per request: the first report looks for its check run, then creates it.
    assert app.mints(installation) == len(sequence) + 1
    async with session_maker() as session:
        dump = await session.scalar(
            text(
                "SELECT string_agg(t::text, '') FROM (SELECT metadata FROM pipeline_runs"
                " WHERE id = :id UNION ALL SELECT payload FROM webhook_payloads"
                " WHERE project_id = :p UNION ALL SELECT to_jsonb(c) FROM"
                " git_provider_connections c WHERE installation_id = :i) t"
            ),
            {"id": run.id, "p": connected.project_id, "i": installation},
        )
    histories = ""
    async for execution in temporal_client.list_workflows(f"TaskQueue = '{task_queue}'"):
        history = await temporal_client.get_workflow_handle(execution.id).fetch_history()
        histories += history.to_json()
    for token in app.all_tokens():
        assert token not in (dump or "")
        assert token not in histories


async def test_rate_limited_check_run_arrives_later(
    api_client,
    temporal_client,
    forge,
    app_forge,
    app_settings,
    session_maker,
    tmp_path,
    task_queue,
    installation,
) -> None:
    app, _ = app_forge
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        app_settings,
        {"src/app.py": "print(4)\n"},
        pipelines=[{"on_push": {}}],
    )
    await connect_through_app(session_maker, connected, installation)
    forge.fail_next(
        Failure(403, {"Retry-After": "1"}, {"message": "You have exceeded a secondary rate limit"}),
        Failure(500, body={"message": "Server Error"}),
    )
    async with run_workers(temporal_client, app_settings, session_maker, task_queue, tmp_path):
        await push_main(api_client, connected, head, first)
        await completed(app, "success")
    (run,) = await runs_of(session_maker, connected.pipeline_ids)
    assert run.status == "success"
    assert [r.answered for r in forge.received][:2] == [403, 500]
    # Reports raced the rate limit, yet the run has one check run that ends completed.
    assert len(app.check_runs) == 1


async def test_lost_creation_answer_creates_no_second_check_run(
    api_client,
    temporal_client,
    forge,
    app_forge,
    app_settings,
    session_maker,
    tmp_path,
    task_queue,
    installation,
) -> None:
    """The forge creates the check run but its answer is lost (a crash, a 502 on the way back):
    the retried report finds that check run by its external ID and updates it."""
    app, _ = app_forge
    app.lose_created = 1
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        app_settings,
        {"src/app.py": "print(5)\n"},
        pipelines=[{"on_push": {}}],
    )
    await connect_through_app(session_maker, connected, installation)
    async with run_workers(temporal_client, app_settings, session_maker, task_queue, tmp_path):
        await push_main(api_client, connected, head, first)
        await completed(app, "success")
    assert app.lose_created == 0
    assert len(app.check_runs) == 1
