"""Pull request tracking on real Postgres, Temporal, git and the sandbox runner: pr_tracking rows
from signed pull request events (state, head/base, head SHA, title, link, author), hostile text
kept harmless, concurrent deliveries of one pull request writing one row, and the CI status that
follows the runs (per pipeline: the latest run counts)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from temporalio.client import Client

from core.integrations import pull_requests
from db.models.integrations import PullRequest
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import (
    Connected,
    commit,
    connect_project,
    connect_repo,
    github_pull,
    integrations_worker,
    make_git_repo,
    run_workers,
    topic_repo,
)
from tests.integrations.support import (
    deliver as deliver_event,
)
from tests.runs.helpers import wait_for


def pull_body(action: str, number: int, head: str, base: str, **pull: Any) -> bytes:
    payload = json.loads(github_pull(action, number, "topic", head, "main", base))
    payload["pull_request"].update(pull)
    return json.dumps(payload).encode()


async def deliver(api_client: Any, client: Client, connected: Connected, body: bytes) -> Any:
    return await deliver_event(api_client, client, connected, body, "pull_request")


async def tracked(session_maker: Any, project_id: uuid.UUID) -> list[PullRequest]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(PullRequest).where(PullRequest.project_id == project_id)
        )
        return list(rows)


async def ci_status_is(session_maker: Any, project_id: uuid.UUID, status: str) -> None:
    async def reached() -> bool:
        rows = await tracked(session_maker, project_id)
        return len(rows) == 1 and rows[0].ci_status == status

    await wait_for(reached, timeout=60)


async def test_pull_request_rows_follow_events_and_runs(
    api_client,
    temporal_client: Client,
    settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, first, head = topic_repo(tmp_path, {"src/feature.py": "1"})
    connected = await connect_repo(
        session_maker,
        settings,
        repo,
        pipelines=[{"on_pull_request": {"types": ["opened", "synchronize"]}}],
        stages=[{"name": "check", "run": "test ! -e failing"}],
    )
    async with run_workers(temporal_client, settings, session_maker, task_queue, tmp_path):
        opened = pull_body(
            "opened",
            5,
            head,
            first,
            title="Add the feature",
            html_url="https://github.com/acme/widgets/pull/5",
            user={"login": "octocat"},
        )
        outcome = await deliver(api_client, temporal_client, connected, opened)
        assert len(outcome.run_ids) == 1
        [row] = await tracked(session_maker, connected.project_id)
        assert (row.pr_number, row.status, row.title, row.author) == (
            5,
            "open",
            "Add the feature",
            "octocat",
        )
        assert (row.branch_name, row.base_branch, row.head_sha) == ("topic", "main", head)
        assert row.pr_url == "https://github.com/acme/widgets/pull/5"
        assert row.repository_id == connected.repository_id
        await ci_status_is(session_maker, connected.project_id, "success")
        [row] = await tracked(session_maker, connected.project_id)
        assert str(row.latest_pipeline_run_id) == outcome.run_ids[0]

        # A push that breaks the check: the newer run decides the pipeline's status.
        newer = commit(repo, {"failing": "x"}, "break it")
        synchronize = pull_body("synchronize", 5, newer, first, title="Add the feature (v2)")
        outcome = await deliver(api_client, temporal_client, connected, synchronize)
        await ci_status_is(session_maker, connected.project_id, "failure")
        [row] = await tracked(session_maker, connected.project_id)
        assert (row.head_sha, row.title, row.status) == (newer, "Add the feature (v2)", "open")
        assert str(row.latest_pipeline_run_id) == outcome.run_ids[0]
        async with session_maker() as session:
            statuses = await pull_requests.pipeline_statuses(
                session, connected.project_id, "acme/widgets", 5
            )
        assert statuses == {str(connected.pipeline_ids[0]): (outcome.run_ids[0], "failure")}

        merged = pull_body("closed", 5, newer, first, merged=True)
        await deliver(api_client, temporal_client, connected, merged)
        [row] = await tracked(session_maker, connected.project_id)
        assert row.status == "merged" and row.merged_at is not None and row.closed_at is not None


async def test_hostile_text_and_concurrent_deliveries_write_one_clean_row(
    api_client, temporal_client: Client, settings: Settings, session_maker, tmp_path: Path
) -> None:
    repo, first = make_git_repo(tmp_path)
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker, settings, org.org_id, url=str(repo), pipelines=[{}]
    )
    body = pull_body(
        "opened",
        9,
        first,
        first,
        title="<script>evil</script>\u202e" + "é" * 5000,
        html_url="javascript:alert(1)",
        user={"login": "a" * 1000},
        draft=True,
    )
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue="unused"
    ):
        outcomes = await asyncio.gather(
            *(deliver(api_client, temporal_client, connected, body) for _ in range(10))
        )
    assert all(o.status == "ignored" for o in outcomes)
    [row] = await tracked(session_maker, connected.project_id)
    title = "<script>evil</script>\u202e"
    assert row.title == title + "é" * (500 - len(title))
    assert row.pr_url == "" and row.author == "a" * 255
    assert row.status == "draft" and row.ci_status == "pending"
