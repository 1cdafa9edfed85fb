"""Concurrency groups on real Postgres, Temporal, git and the sandbox runner: a push to a pull
request's branch cancels the pipeline's older runs of that pull request still in progress (with the
reason kept on the run), a pipeline that opts out keeps them, other pull requests are untouched,
pushes to a branch cancel only when the pipeline asks, and a retried start cancels nothing twice."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from core.integrations import event_runs
from core.runs import service as runs
from db.models.accounts import Organization
from db.session import session_scope
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import (
    commit,
    connect_project,
    deliver,
    github_pull,
    github_push,
    make_git_repo,
    run_workers,
    runs_of,
    topic_repo,
)
from tests.runs.helpers import run_row, wait_for
from workflows.integrations_models import (
    ForgeEvent,
    StartRunsInput,
)

SLOW = [{"name": "slow", "run": "sleep 50"}]


async def org_with_builds(session_maker: Any) -> Any:
    """An organization whose runs all get a build slot at once."""
    org = await make_org(session_maker)
    async with session_scope(session_maker) as session:
        row = await session.get(Organization, org.org_id)
        assert row is not None
        row.settings = {**(row.settings or {}), "concurrent_builds": 10}
    return org


async def by_pipeline(session_maker: Any, run_ids: list[str]) -> dict[uuid.UUID, str]:
    """The runs of one delivery by pipeline (pipelines created together match in any order)."""
    rows = [await run_row(session_maker, uuid.UUID(run_id)) for run_id in run_ids]
    return {row.pipeline_id: str(row.id) for row in rows}


async def running(session_maker: Any, run_id: str) -> None:
    async def started() -> bool:
        return (await run_row(session_maker, uuid.UUID(run_id))).status == "running"

    await wait_for(started, timeout=60)


async def ended(session_maker: Any, run_id: str) -> Any:
    async def done() -> bool:
        row = await run_row(session_maker, uuid.UUID(run_id))
        return row.status in ("success", "failed", "cancelled")

    await wait_for(done, timeout=60)
    return await run_row(session_maker, uuid.UUID(run_id))


async def test_pull_request_synchronize_cancels_the_superseded_run(
    api_client,
    temporal_client: Client,
    settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, first, head = topic_repo(tmp_path, {"src/feature.py": "1"})
    org = await org_with_builds(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(repo),
        pipelines=[
            {"on_pull_request": {}},
            {
                "on_pull_request": {},
                "concurrency": {"cancel_in_progress_pull_requests": False},
            },
        ],
        stages=SLOW,
    )
    cancelling, keeping = connected.pipeline_ids
    async with run_workers(temporal_client, settings, session_maker, task_queue, tmp_path):
        opened = await deliver(
            api_client,
            temporal_client,
            connected,
            github_pull("opened", 7, "topic", head, "main", first),
            "pull_request",
        )
        other = await deliver(
            api_client,
            temporal_client,
            connected,
            github_pull("opened", 8, "topic", head, "main", first),
            "pull_request",
        )
        old = await by_pipeline(session_maker, opened.run_ids)
        old_cancelling, old_keeping = old[cancelling], old[keeping]
        for run_id in [*opened.run_ids, *other.run_ids]:
            await running(session_maker, run_id)

        newer = commit(repo, {"src/feature.py": "2"}, "feature again")
        synchronize = github_pull("synchronize", 7, "topic", newer, "main", first)
        pushed = await deliver(api_client, temporal_client, connected, synchronize, "pull_request")
        new = await by_pipeline(session_maker, pushed.run_ids)
        new_cancelling, new_keeping = new[cancelling], new[keeping]

        superseded = await ended(session_maker, old_cancelling)
        assert superseded.status == "cancelled"
        assert superseded.metadata_["superseded_by"] == new_cancelling
        assert superseded.metadata_["cancel_reason"].startswith("superseded by run #")
        # The pipeline that opted out, and the other pull request's runs, keep running.
        for run_id in [old_keeping, *other.run_ids, new_cancelling, new_keeping]:
            assert (await run_row(session_maker, uuid.UUID(run_id))).status == "running"

        # A retried start (the activity after a crash) creates and cancels nothing more.
        event = ForgeEvent(
            provider="github",
            delivery_id="retry",
            kind="pull_request",
            repository_id=str(connected.repository_id),
            project_id=str(connected.project_id),
            organization_id=str(org.org_id),
            forge_repository="acme/widgets",
            ref_name="topic",
            head_sha=newer,
            pr_number=7,
            pr_action="synchronize",
            base_branch="main",
        )
        again = await event_runs.start_runs(
            session_maker,
            temporal_client,
            settings,
            StartRunsInput(event=event, pipeline_ids=[str(cancelling)]),
            run_task_queue=task_queue,
        )
        [latest] = again.run_ids
        assert (await ended(session_maker, new_cancelling)).status == "cancelled"
        retried = await event_runs.start_runs(
            session_maker,
            temporal_client,
            settings,
            StartRunsInput(event=event, pipeline_ids=[str(cancelling)]),
            run_task_queue=task_queue,
        )
        assert retried.run_ids == [latest]
        assert len(await runs_of(session_maker, [cancelling])) == 4

        for run in await runs_of(session_maker, connected.pipeline_ids):
            if run.status in ("queued", "running"):
                await runs.cancel_run(temporal_client, run)
        for run in await runs_of(session_maker, connected.pipeline_ids):
            await ended(session_maker, str(run.id))


async def test_pushes_cancel_older_runs_of_the_branch_only_when_asked(
    api_client,
    temporal_client: Client,
    settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, first = make_git_repo(tmp_path)
    org = await org_with_builds(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(repo),
        pipelines=[
            {"on_push": {}},
            {"on_push": {}, "concurrency": {"cancel_in_progress_pushes": True}},
        ],
        stages=SLOW,
    )
    default, cancelling = connected.pipeline_ids
    async with run_workers(temporal_client, settings, session_maker, task_queue, tmp_path):
        second = commit(repo, {"a.txt": "1"})
        one = await deliver(
            api_client,
            temporal_client,
            connected,
            github_push("refs/heads/main", second, first),
            "push",
        )
        for run_id in one.run_ids:
            await running(session_maker, run_id)
        third = commit(repo, {"a.txt": "2"})
        two = await deliver(
            api_client,
            temporal_client,
            connected,
            github_push("refs/heads/main", third, second),
            "push",
        )
        first_runs = await by_pipeline(session_maker, one.run_ids)
        kept, superseded = first_runs[default], first_runs[cancelling]
        assert (await ended(session_maker, superseded)).status == "cancelled"
        assert (await run_row(session_maker, uuid.UUID(kept))).status == "running"
        assert len(await runs_of(session_maker, [default])) == 2
        for run in await runs_of(session_maker, connected.pipeline_ids):
            if run.status in ("queued", "running"):
                await runs.cancel_run(temporal_client, run)
        for run_id in [kept, *two.run_ids]:
            await ended(session_maker, run_id)
